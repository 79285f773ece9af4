"""Trees of kernel files under a temporary directory, shaped like real guests."""

from __future__ import annotations

from pathlib import Path

from . import kernel_text as k


class FakeRoot:
    """A filesystem root holding /proc and /sys files; methods add the parts of a guest."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, absolute: str, text: str) -> Path:
        target = self.path / absolute.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        return target

    def remove(self, absolute: str) -> None:
        (self.path / absolute.lstrip("/")).unlink()

    def read(self, absolute: str) -> str:
        return (self.path / absolute.lstrip("/")).read_text()

    def virtio_device(self, name: str, device_id: str, features: str, driver: str | None) -> None:
        base = f"/sys/bus/virtio/devices/{name}"
        self.write(f"{base}/device", f"{device_id}\n")
        self.write(f"{base}/vendor", "0x1af4\n")
        self.write(f"{base}/features", features)
        if driver is not None:
            driver_dir = self.path / "sys/bus/virtio/drivers" / driver
            driver_dir.mkdir(parents=True, exist_ok=True)
            (self.path / base.lstrip("/") / "driver").symlink_to(driver_dir)

    def cgroup2(self, memory_reclaim: bool = True) -> None:
        self.write("/proc/self/mounts", k.MOUNTS_DEBIAN_12)
        self.write("/sys/fs/cgroup/cgroup.controllers", k.CGROUP_CONTROLLERS)
        if memory_reclaim:
            self.write("/sys/fs/cgroup/memory.reclaim", "")

    def vm_sysctls(self, swappiness: int = 60) -> None:
        self.write("/proc/sys/vm/drop_caches", "0\n")
        self.write("/proc/sys/vm/compact_memory", "0\n")
        self.write("/proc/sys/vm/swappiness", f"{swappiness}\n")


def debian_guest(path: Path) -> FakeRoot:
    """Debian 12 in QEMU: Linux 6.1, cgroup v2 with memory.reclaim, PSI, virtio-balloon with free
    page reporting negotiated, page_reporting_order set to 9 by the driver, no swap."""
    root = FakeRoot(path)
    root.write("/proc/sys/kernel/osrelease", k.OSRELEASE_DEBIAN_6_1)
    root.write("/proc/meminfo", k.MEMINFO_DEBIAN_6_1)
    root.write("/proc/vmstat", k.VMSTAT_DEBIAN_6_1)
    root.write("/proc/buddyinfo", k.BUDDYINFO_DEBIAN_6_1)
    root.write("/proc/stat", k.STAT_DEBIAN_6_1)
    root.write("/proc/pressure/memory", k.PSI_MEMORY_IDLE)
    root.write("/proc/pressure/io", k.PSI_IO_IDLE)
    root.vm_sysctls()
    root.cgroup2()
    root.write("/sys/kernel/mm/transparent_hugepage/enabled", k.THP_ENABLED_ALWAYS)
    root.write("/sys/module/page_reporting/parameters/page_reporting_order", "9\n")
    root.virtio_device("virtio0", "0x0002", k.FEATURES_BLOCK, "virtio_blk")
    root.virtio_device("virtio1", "0x0005", k.FEATURES_BALLOON_FPR, "virtio_balloon")
    return root


def wsl2_guest(path: Path) -> FakeRoot:
    """WSL2 on Hyper-V: Linux 6.6, hv_balloon instead of virtio, reporting order 5, swap on."""
    root = FakeRoot(path)
    root.write("/proc/sys/kernel/osrelease", k.OSRELEASE_WSL2)
    root.write("/proc/meminfo", k.MEMINFO_DEBIAN_6_1_SWAP)
    root.write("/proc/vmstat", k.VMSTAT_DEBIAN_6_1)
    root.write("/proc/buddyinfo", k.BUDDYINFO_DEBIAN_6_1)
    root.write("/proc/stat", k.STAT_DEBIAN_6_1)
    root.write("/proc/pressure/memory", k.PSI_MEMORY_IDLE)
    root.write("/proc/pressure/io", k.PSI_IO_IDLE)
    root.vm_sysctls()
    root.cgroup2()
    root.write("/sys/module/page_reporting/parameters/page_reporting_order", "5\n")
    root.write("/sys/module/hv_balloon/parameters/hot_add", "Y\n")
    (path / "sys/bus/vmbus/drivers/hv_balloon").mkdir(parents=True)
    return root
