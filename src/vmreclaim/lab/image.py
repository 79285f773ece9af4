"""Guest images: a kernel and a busybox initramfs, cached under a key made of their inputs so
that a second build with the same inputs is instant."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import struct
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from vmreclaim import paths
from vmreclaim.errors import MissingDependencyError
from vmreclaim.lab import cpio
from vmreclaim.lab.kernel import (
    KernelSource,
    distribution_kernel,
    load_order,
    module_bytes,
    user_kernel,
)

log = logging.getLogger(__name__)

# Bump when the layout of the initramfs changes in a way the inputs' digests do not show.
_FORMAT = "vmreclaim-initramfs-2"

_BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox", "/usr/lib/initramfs-tools/bin/busybox")

# The guest sees no file of the host but /usr and the package's own source (both read-only,
# over 9p): these few stand in for the host's /etc. PostgreSQL (the pgbench scenarios) refuses
# to run as root, and initdb looks its user up by uid: hence `postgres`.
_ETC = {
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\n"
    "postgres:x:70:70:PostgreSQL:/tmp:/bin/sh\n"
    "nobody:x:65534:65534:nobody:/:/bin/false\n",
    "etc/group": "root:x:0:\npostgres:x:70:\nnogroup:x:65534:\n",
    "etc/hosts": "127.0.0.1 localhost\n",
    "etc/hostname": "vmreclaim-lab\n",
}


@dataclass(frozen=True)
class GuestImage:
    """What QEMU boots: `-kernel kernel -initrd initramfs`."""

    kernel: Path
    initramfs: Path
    release: str
    key: str


def init_script() -> bytes:
    return resources.files("vmreclaim.lab").joinpath("guest-init.sh").read_bytes()


def _is_static_elf(path: Path) -> bool:
    """True for an ELF executable without a program interpreter (PT_INTERP)."""
    with path.open("rb") as elf:
        header = elf.read(64)
        if header[:4] != b"\x7fELF" or header[4] != 2:  # 64-bit only
            return False
        (phoff,) = struct.unpack_from("<Q", header, 32)
        phentsize, phnum = struct.unpack_from("<HH", header, 54)
        elf.seek(phoff)
        table = elf.read(phentsize * phnum)
    pt_interp = 3
    return all(struct.unpack_from("<I", table, i * phentsize)[0] != pt_interp for i in range(phnum))


def find_busybox() -> Path:
    for candidate in (shutil.which("busybox"), *_BUSYBOX_CANDIDATES):
        if candidate and Path(candidate).is_file() and _is_static_elf(Path(candidate)):
            return Path(candidate)
    raise MissingDependencyError(
        "no statically linked busybox found",
        hint="apt-get install busybox-static (scripts/setup does)",
    )


def _entries(kernel: KernelSource, busybox: Path) -> list[cpio.Entry]:
    modules = load_order(kernel.modules_dir)
    entries = [
        cpio.directory(d)
        for d in (
            "bin",
            "sbin",
            "dev",
            "proc",
            "sys",
            "run",
            "tmp",
            "root",
            "usr",
            "etc",
            "mnt",
            "mnt/scratch",
            "opt",
            "opt/vmreclaim",
            "opt/vmreclaim/lib",
            "opt/vmreclaim/lib/vmreclaim",
            "modules",
        )
    ]
    entries += [
        cpio.regular("init", init_script(), executable=True),
        cpio.regular("bin/busybox", busybox.read_bytes(), executable=True),
        # Valid once the host's /usr is mounted: the dynamic loader and libraries of python3.
        cpio.symlink("lib", "usr/lib"),
        cpio.symlink("lib64", "usr/lib64"),
    ]
    entries += [cpio.regular(path, text.encode()) for path, text in _ETC.items()]
    names = []
    for index, module in enumerate(modules):
        name = f"{index:02d}-{module.name.split('.ko')[0]}.ko"
        names.append(name)
        entries.append(cpio.regular(f"modules/{name}", module_bytes(module)))
    entries.append(cpio.regular("modules/order", ("\n".join(names) + "\n").encode()))
    return entries


def _digest(kernel: KernelSource, busybox: Path) -> str:
    digest = hashlib.sha256(_FORMAT.encode())
    digest.update(kernel.vmlinuz.read_bytes())
    digest.update(busybox.read_bytes())
    digest.update(init_script())
    for module in load_order(kernel.modules_dir):
        digest.update(module.name.encode())
        digest.update(module.read_bytes())
    return digest.hexdigest()[:20]


def build_image(
    kernel: Path | None = None,
    modules: Path | None = None,
    *,
    cache: Path | None = None,
    force: bool = False,
) -> GuestImage:
    """Build the lab's guest image, or return the cached one built from the same inputs."""
    cache = cache or paths.cache_dir()
    source = user_kernel(kernel, modules) if kernel else distribution_kernel(cache)
    busybox = find_busybox()
    key = _digest(source, busybox)
    out = cache / "images" / key
    image = GuestImage(out / "vmlinuz", out / "initramfs.cpio", source.release, key)
    if (out / "image.json").exists() and not force:
        log.debug("guest image %s is cached in %s", key, out)
        return image
    log.info("building the guest image for kernel %s in %s", source.release, out)
    staging = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    shutil.copyfile(source.vmlinuz, staging / "vmlinuz")
    with (staging / "initramfs.cpio").open("wb") as archive:
        cpio.write_newc(archive, _entries(source, busybox))
    meta = {"release": source.release, "kernel": str(source.vmlinuz), "busybox": str(busybox)}
    (staging / "image.json").write_text(json.dumps(meta, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return image
