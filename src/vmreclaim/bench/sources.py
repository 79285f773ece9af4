"""Source packages that scenarios build in the guest. scripts/setup downloads each once with
apt's ordinary client (`apt-get source --download-only`) into the cache; here they are found
and checked against their .dsc before they go onto the guest's scratch disk."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from vmreclaim import paths
from vmreclaim.errors import MissingDependencyError

_SETUP_HINT = "run scripts/setup, which downloads it once"


@dataclass(frozen=True)
class SourcePackage:
    name: str
    version: str
    """The Debian version of the .dsc, e.g. 3.40.1-2+deb12u2."""
    directory: Path
    """The .dsc and the files it lists, and nothing else."""

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"


def dsc_fields(text: str) -> tuple[str, dict[str, str]]:
    """The version of a .dsc and its files with their SHA-256 (the Checksums-Sha256 field);
    the OpenPGP armour around a signed .dsc is skipped."""
    version = ""
    files: dict[str, str] = {}
    in_checksums = False
    for line in text.splitlines():
        if line.startswith("Version:"):
            version = line.split(":", 1)[1].strip()
        if line.startswith((" ", "\t")):
            if in_checksums and len(fields := line.split()) == 3:
                files[fields[2]] = fields[0]
            continue
        in_checksums = line.startswith("Checksums-Sha256:")
    return version, files


def find_source(name: str, cache: Path | None = None) -> SourcePackage:
    """The downloaded source package `name`, its files checked; MissingDependencyError with
    what is wrong and how to fix it otherwise."""
    directory = (cache or paths.cache_dir()) / "sources" / name
    dscs = sorted(directory.glob(f"{name}_*.dsc"))
    if len(dscs) != 1:
        found = "none" if not dscs else ", ".join(d.name for d in dscs)
        raise MissingDependencyError(
            f"the source package {name} is not downloaded: expected one {name}_*.dsc in "
            f"{directory}, found {found}",
            hint=_SETUP_HINT if not dscs else f"remove {directory} and {_SETUP_HINT}",
        )
    version, files = dsc_fields(dscs[0].read_text(errors="replace"))
    if not version or not files:
        raise MissingDependencyError(
            f"{dscs[0]} has no Version or Checksums-Sha256 field",
            hint=f"remove {directory} and {_SETUP_HINT}",
        )
    for file_name, sha256 in files.items():
        path = directory / file_name
        if not path.is_file() or _sha256(path) != sha256:
            raise MissingDependencyError(
                f"{path} is missing or does not match its SHA-256 in {dscs[0].name}",
                hint=f"remove {directory} and {_SETUP_HINT}",
            )
    return SourcePackage(name, version, directory)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
