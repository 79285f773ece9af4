"""Finding a downloaded source package and checking it against its .dsc."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from vmreclaim.bench.sources import dsc_fields, find_source
from vmreclaim.errors import MissingDependencyError

ORIG = b"not really a tarball\n"


def _dsc(files: dict[str, bytes]) -> str:
    """A signed .dsc in Debian's layout: armour, fields, a folded Checksums-Sha256 field."""
    sha256 = "".join(
        f" {hashlib.sha256(data).hexdigest()} {len(data)} {name}\n" for name, data in files.items()
    )
    md5 = "".join(
        f" {hashlib.md5(data).hexdigest()} {len(data)} {name}\n" for name, data in files.items()
    )
    return (
        "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n"
        "Format: 3.0 (quilt)\nSource: demo\nBinary: demo\nVersion: 1.2-3+deb12u1\n"
        f"Checksums-Sha256:\n{sha256}Files:\n{md5}"
        "\n-----BEGIN PGP SIGNATURE-----\n\niQIzBAEBCgAdFiEE\n=abcd\n-----END PGP SIGNATURE-----\n"
    )


def _download(cache: Path, files: dict[str, bytes]) -> Path:
    directory = cache / "sources" / "demo"
    directory.mkdir(parents=True)
    for name, data in files.items():
        (directory / name).write_bytes(data)
    (directory / "demo_1.2-3+deb12u1.dsc").write_text(_dsc(files))
    return directory


def test_the_version_and_the_sha256_of_each_file_are_read_and_md5_is_ignored() -> None:
    version, files = dsc_fields(_dsc({"demo_1.2.orig.tar.xz": ORIG}))
    assert version == "1.2-3+deb12u1"
    assert files == {"demo_1.2.orig.tar.xz": hashlib.sha256(ORIG).hexdigest()}


def test_a_complete_download_is_found_with_its_version(tmp_path: Path) -> None:
    directory = _download(tmp_path, {"demo_1.2.orig.tar.xz": ORIG})
    source = find_source("demo", tmp_path)
    assert source.directory == directory
    assert source.label == "demo 1.2-3+deb12u1"


def test_a_missing_download_says_to_run_setup(tmp_path: Path) -> None:
    with pytest.raises(MissingDependencyError) as caught:
        find_source("demo", tmp_path)
    assert "not downloaded" in caught.value.message
    assert caught.value.hint is not None
    assert "scripts/setup" in caught.value.hint


@pytest.mark.parametrize("damage", ["missing", "changed"])
def test_a_file_missing_or_unlike_its_checksum_is_refused(tmp_path: Path, damage: str) -> None:
    directory = _download(tmp_path, {"demo_1.2.orig.tar.xz": ORIG})
    tarball = directory / "demo_1.2.orig.tar.xz"
    if damage == "missing":
        tarball.unlink()
    else:
        tarball.write_bytes(ORIG.upper())
    with pytest.raises(MissingDependencyError, match="does not match its SHA-256"):
        find_source("demo", tmp_path)


def test_a_scenario_whose_source_is_missing_fails_before_a_guest_boots(
    tmp_path: Path, monkeypatch
) -> None:
    from vmreclaim.bench.contenders import CONTENDERS
    from vmreclaim.bench.runner import run_one
    from vmreclaim.bench.scenarios import SCENARIOS
    from vmreclaim.lab import machine

    monkeypatch.setenv("VMRECLAIM_CACHE", str(tmp_path))
    monkeypatch.setattr(machine.VirtualMachine, "start", lambda self: pytest.fail("booted"))
    with pytest.raises(MissingDependencyError, match="sqlite3 is not downloaded"):
        run_one(SCENARIOS["build-real"](True), CONTENDERS["reporting"], None)
