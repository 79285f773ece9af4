"""Which modules the guest loads, and in what order, from a kernel's modules.dep."""

from __future__ import annotations

import lzma
from pathlib import Path

import pytest

from vmreclaim.errors import MissingDependencyError, UsageError
from vmreclaim.lab.kernel import load_order, module_bytes, user_kernel

# Lines as depmod writes them for Debian's 6.1 kernel.
MODULES_DEP = """\
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_balloon.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko kernel/fs/fscache/fscache.ko kernel/fs/netfs/netfs.ko
kernel/net/9p/9pnet.ko:
kernel/fs/fscache/fscache.ko: kernel/fs/netfs/netfs.ko
kernel/fs/netfs/netfs.ko:
kernel/crypto/crc32c_generic.ko:
"""


@pytest.fixture
def modules(tmp_path: Path) -> Path:
    tree = tmp_path / "6.1.0-56-amd64"
    tree.mkdir()
    (tree / "modules.dep").write_text(MODULES_DEP)
    (tree / "modules.builtin").write_text(
        "kernel/fs/ext4/ext4.ko\nkernel/drivers/block/virtio_blk.ko\n"
    )
    return tree


def _names(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


def test_dependencies_load_before_the_module(modules: Path) -> None:
    order = _names(load_order(modules, ("virtio_pci",)))
    assert order[-1] == "virtio_pci.ko"
    assert set(order[:-1]) == {
        "virtio_pci_legacy_dev.ko",
        "virtio_pci_modern_dev.ko",
        "virtio.ko",
        "virtio_ring.ko",
    }


def test_shared_dependencies_load_once(modules: Path) -> None:
    order = _names(load_order(modules, ("virtio_pci", "virtio_balloon")))
    assert order.count("virtio.ko") == 1
    assert order.index("virtio.ko") < order.index("virtio_balloon.ko")


def test_transitive_dependencies_come_first(modules: Path) -> None:
    order = _names(load_order(modules, ("9p",)))
    assert order.index("netfs.ko") < order.index("fscache.ko") < order.index("9p.ko")


def test_builtin_modules_are_skipped(modules: Path) -> None:
    assert load_order(modules, ("ext4", "virtio_blk")) == []


def test_a_missing_module_is_named(modules: Path) -> None:
    with pytest.raises(MissingDependencyError, match="virtio_console"):
        load_order(modules, ("virtio_console",))


def test_compressed_modules_are_unpacked(tmp_path: Path) -> None:
    packed = tmp_path / "virtio.ko.xz"
    packed.write_bytes(lzma.compress(b"\x7fELF module"))
    assert module_bytes(packed) == b"\x7fELF module"


def test_user_kernel_needs_an_existing_file(tmp_path: Path, modules: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        user_kernel(tmp_path / "vmlinuz", modules)


def test_user_kernel_needs_a_module_tree_with_modules_dep(tmp_path: Path) -> None:
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"MZ")
    with pytest.raises(UsageError, match=r"modules\.dep"):
        user_kernel(kernel, tmp_path)
