"""The guest kernel: the distribution's kernel package, or one the user names, and the modules
the lab guest needs from it in the order they load."""

from __future__ import annotations

import gzip
import logging
import lzma
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from vmreclaim.errors import MissingDependencyError, UsageError

log = logging.getLogger(__name__)

# What the lab guest loads: the PCI transport, the balloon (free page reporting), the console
# that carries the command channel, 9p for the shared /usr and checkout, and virtio-blk + ext4
# for the scratch disk. crc32c_generic: ext4 finds its crc32c through the crypto API, a soft
# dependency that modules.dep does not list, and a busybox guest has no /sbin/modprobe for the
# kernel to load it on demand (seen here: ext4 fails to mount without it).
GUEST_MODULES = (
    "virtio_pci",
    "virtio_balloon",
    "virtio_console",
    "virtio_blk",
    "9pnet_virtio",
    "9p",
    "crc32c_generic",
    "ext4",
)


@dataclass(frozen=True)
class KernelSource:
    """A bootable kernel and the `lib/modules/<release>` tree that goes with it."""

    vmlinuz: Path
    modules_dir: Path
    release: str


def _run(argv: list[str], cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError as err:
        raise MissingDependencyError(
            f"{argv[0]} is not installed",
            hint="run scripts/setup, or pass --kernel and --modules",
        ) from err
    if done.returncode != 0:
        raise MissingDependencyError(
            f"{' '.join(argv)} failed: {done.stderr.strip() or done.stdout.strip()}",
            hint="run scripts/setup (it runs apt-get update), or pass --kernel and --modules",
        )
    return done.stdout


def _image_package() -> str:
    """The real package behind the distribution's kernel metapackage (Debian or Ubuntu)."""
    arch = _run(["dpkg", "--print-architecture"]).strip()
    for meta in (f"linux-image-{arch}", "linux-image-generic"):
        out = subprocess.run(
            ["apt-cache", "depends", meta], capture_output=True, text=True, check=False
        ).stdout
        for line in out.splitlines():
            words = line.split()
            if words[:1] == ["Depends:"] and words[1].startswith("linux-image-"):
                return words[1]
    raise MissingDependencyError(
        "apt does not know a kernel package (linux-image-amd64 or linux-image-generic)",
        hint="run `apt-get update` (scripts/setup does), or pass --kernel and --modules",
    )


def _module_packages(image_package: str) -> list[str]:
    """Ubuntu ships modules in separate linux-modules-* packages; Debian inside the image."""
    out = _run(["apt-cache", "depends", image_package])
    return [
        words[1]
        for words in (line.split() for line in out.splitlines())
        if words[:1] == ["Depends:"] and words[1].startswith("linux-modules-")
    ]


def distribution_kernel(cache: Path) -> KernelSource:
    """Download and unpack the distribution's kernel package once; later calls reuse it."""
    try:
        package = _image_package()
    except MissingDependencyError:
        cached = sorted((cache / "kernels").glob("*/.complete"), key=lambda p: p.stat().st_mtime)
        if not cached:
            raise
        # Offline or apt not at hand: the newest kernel already unpacked will do.
        package = cached[-1].parent.name
        log.info("apt cannot name the kernel package; using the cached %s", package)
    dest = cache / "kernels" / package
    if not (dest / ".complete").exists():
        log.info("downloading the guest kernel %s (once; it is cached in %s)", package, dest)
        if dest.exists():
            shutil.rmtree(dest)
        with tempfile.TemporaryDirectory(prefix="vmreclaim-kernel-") as tmp:
            work = Path(tmp)
            _run(["apt-get", "download", package, *_module_packages(package)], cwd=work)
            unpacked = work / "root"
            for deb in sorted(work.glob("*.deb")):
                _run(["dpkg-deb", "-x", str(deb), str(unpacked)])
            release = _single_release(unpacked / "lib" / "modules")
            _run([_depmod(), "-b", str(unpacked), release])
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(unpacked), str(dest))
        (dest / ".complete").touch()
    release = _single_release(dest / "lib" / "modules")
    vmlinuz = dest / "boot" / f"vmlinuz-{release}"
    return KernelSource(vmlinuz, dest / "lib" / "modules" / release, release)


def _depmod() -> str:
    for candidate in (shutil.which("depmod"), "/sbin/depmod", "/usr/sbin/depmod"):
        if candidate and Path(candidate).exists():
            return candidate
    raise MissingDependencyError(
        "depmod is not installed", hint="apt-get install kmod (scripts/setup does)"
    )


def _single_release(modules_root: Path) -> str:
    releases = sorted(p.name for p in modules_root.iterdir()) if modules_root.is_dir() else []
    if len(releases) != 1:
        raise MissingDependencyError(
            f"expected one kernel release in {modules_root}, found {releases}"
        )
    return releases[0]


def user_kernel(vmlinuz: Path, modules: Path | None) -> KernelSource:
    """A kernel the user names; its modules default to /lib/modules/<dir name>."""
    if not vmlinuz.is_file():
        raise UsageError(f"kernel {vmlinuz} does not exist", hint="pass the path of a vmlinuz")
    if modules is None:
        raise UsageError(
            "--kernel needs --modules",
            hint="pass the kernel's module tree, e.g. --modules /lib/modules/RELEASE",
        )
    if not (modules / "modules.dep").is_file():
        raise UsageError(
            f"{modules} has no modules.dep",
            hint=f"pass a lib/modules/RELEASE tree, or run depmod for it first ({modules})",
        )
    return KernelSource(vmlinuz, modules, modules.name)


def _module_name(path: str) -> str:
    name = Path(path).name.split(".ko")[0]
    return name.replace("-", "_")


def load_order(modules_dir: Path, wanted: tuple[str, ...] = GUEST_MODULES) -> list[Path]:
    """The module files to insmod, dependencies first; modules built into the kernel are skipped."""
    depends: dict[str, tuple[str, list[str]]] = {}
    for line in (modules_dir / "modules.dep").read_text().splitlines():
        target, _, deps = line.partition(":")
        depends[_module_name(target)] = (target, deps.split())
    builtin_file = modules_dir / "modules.builtin"
    builtin = (
        {_module_name(line) for line in builtin_file.read_text().split()}
        if builtin_file.exists()
        else set()
    )
    order: list[Path] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen or name in builtin:
            return
        seen.add(name)
        if name not in depends:
            raise MissingDependencyError(
                f"the kernel in {modules_dir} has no module {name}",
                hint="use a kernel built with virtio, virtio-balloon, 9p and ext4 (as modules "
                "or built in)",
            )
        path, deps = depends[name]
        for dep in deps:
            visit(_module_name(dep))
        order.append(modules_dir / path)

    for name in wanted:
        visit(name)
    return order


def module_bytes(path: Path) -> bytes:
    """The module's ELF, decompressed: busybox insmod takes plain .ko files."""
    data = path.read_bytes()
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(data)
    if path.name.endswith(".ko.gz"):
        return gzip.decompress(data)
    if path.name.endswith(".ko.zst"):
        zstd = shutil.which("zstd")
        if zstd is None:
            raise MissingDependencyError(
                f"{path.name} is zstd-compressed", hint="apt-get install zstd"
            )
        return subprocess.run([zstd, "-dc", str(path)], capture_output=True, check=True).stdout
    return data
