"""The initramfs writer produces archives that the standard cpio tool reads back."""

from __future__ import annotations

import io
import shutil
import subprocess

import pytest

from vmreclaim.lab import cpio


def _archive() -> bytes:
    out = io.BytesIO()
    cpio.write_newc(
        out,
        [
            cpio.directory("bin"),
            cpio.regular("bin/hello", b"#!/bin/sh\necho hi\n", executable=True),
            cpio.symlink("lib", "usr/lib"),
            cpio.regular("odd", b"12345"),
        ],
    )
    return out.getvalue()


def test_archive_is_padded_to_four_bytes_and_ends_with_a_trailer() -> None:
    data = _archive()
    assert len(data) % 4 == 0
    assert b"TRAILER!!!\0" in data[-128:]


def test_same_entries_give_the_same_bytes() -> None:
    assert _archive() == _archive()


@pytest.mark.skipif(shutil.which("cpio") is None, reason="needs the cpio tool to read back")
def test_cpio_tool_lists_modes_and_link_targets(tmp_path) -> None:
    listing = subprocess.run(
        ["cpio", "-itv", "--quiet"], input=_archive(), capture_output=True, check=True
    ).stdout.decode()
    lines = {
        line.split()[-1] if "->" not in line else line.split()[-3]: line
        for line in listing.splitlines()
    }
    assert lines["bin"].startswith("drwxr-xr-x")
    assert lines["bin/hello"].startswith("-rwxr-xr-x")
    assert "lib -> usr/lib" in lines["lib"]
    assert lines["odd"].startswith("-rw-r--r--")
