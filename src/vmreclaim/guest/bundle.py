"""`vmreclaim guest bundle`: the whole package as one executable file (a Python zip app), so
installing the agent in a VM is copying one file: `python3 vmreclaim.pyz guest run`."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import vmreclaim

_MAIN = b"import sys\nfrom vmreclaim.cli import main\nsys.exit(main())\n"
_SHEBANG = b"#!/usr/bin/env python3\n"


def build_bundle(out: Path) -> int:
    """Write the bundle to `out` (mode 0755); returns its size in bytes."""
    package = Path(vmreclaim.__file__).resolve().parent
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("__main__.py", _MAIN)
        for path in sorted(package.rglob("*")):
            if path.is_dir() or "__pycache__" in path.parts or path.suffix == ".pyc":
                continue
            archive.write(path, Path("vmreclaim") / path.relative_to(package))
    data = _SHEBANG + buffer.getvalue()
    out.write_bytes(data)
    os.chmod(out, 0o755)
    return len(data)
