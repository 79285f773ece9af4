"""The free page reporting path: a virtio-balloon or Hyper-V balloon, and the reporting order."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from vmreclaim.guest.observe._files import read_int, read_text, under

# include/uapi/linux/virtio_ids.h: VIRTIO_ID_BALLOON = 5, shown by sysfs as "0x0005".
VIRTIO_ID_BALLOON = 0x0005
# include/uapi/linux/virtio_balloon.h feature bits.
F_STATS_VQ = 1
F_DEFLATE_ON_OOM = 2
F_FREE_PAGE_HINT = 3
F_REPORTING = 5
# Reporting order when page_reporting_order is unset: pageblock_order, 9 on x86-64 (2 MiB blocks
# with 4 KiB pages). page_reporting_register() sets the parameter to it when a driver registers.
DEFAULT_REPORTING_ORDER = 9
# Highest buddy order on x86-64 (11 free lists, orders 0..10). The parameter is clamped to it.
MAX_BUDDY_ORDER = 10

PAGE_REPORTING_ORDER_FILE = "/sys/module/page_reporting/parameters/page_reporting_order"
ReportingKind = Literal["virtio-balloon", "hv-balloon", "none"]


@dataclass(frozen=True)
class VirtioBalloon:
    """A virtio device of type balloon. `features` is sysfs's negotiated-feature string: one '0' or
    '1' per bit, from bit 0. Before a driver binds, nothing is negotiated."""

    device: str  # "virtio0"
    driver_bound: bool
    features: str

    def has_feature(self, bit: int) -> bool:
        return len(self.features) > bit and self.features[bit] == "1"

    @property
    def free_page_reporting(self) -> bool:
        return self.has_feature(F_REPORTING)

    @property
    def deflate_on_oom(self) -> bool:
        return self.has_feature(F_DEFLATE_ON_OOM)


@dataclass(frozen=True)
class ReportingPath:
    """How free memory gets back to the host, if at all.

    negotiated: True/False for virtio-balloon (feature bit 5); None where the guest cannot tell
    (Hyper-V logs "Cold memory discard hint enabled with order N" but exposes no file for it).
    order: blocks of this order and above are reported; `order_is_default` when the parameter
    file is missing or unset and DEFAULT_REPORTING_ORDER is assumed.
    """

    kind: ReportingKind
    negotiated: bool | None
    order: int
    order_parameter: int | None  # raw page_reporting_order; -1 (unset) on 6.3+ kernels
    order_is_default: bool
    order_parameter_present: bool  # CONFIG_PAGE_REPORTING with the 5.14+ module parameter
    virtio: VirtioBalloon | None


def _parse_device_id(text: str | None) -> int | None:
    try:
        return None if text is None else int(text.strip(), 16)
    except ValueError:
        return None


def read_virtio_balloons(root: Path = Path("/")) -> tuple[VirtioBalloon, ...]:
    """Every virtio balloon under /sys/bus/virtio/devices, in device-name order."""
    devices = under(root, "/sys/bus/virtio/devices")
    if not devices.is_dir():
        return ()
    balloons = []
    for device in sorted(devices.iterdir(), key=lambda path: path.name):
        relative = f"/sys/bus/virtio/devices/{device.name}"
        if _parse_device_id(read_text(root, f"{relative}/device")) != VIRTIO_ID_BALLOON:
            continue
        features = (read_text(root, f"{relative}/features") or "").strip()
        balloons.append(VirtioBalloon(device.name, (device / "driver").exists(), features))
    return tuple(balloons)


def read_hv_balloon(root: Path = Path("/")) -> bool:
    """True when Hyper-V's balloon driver is registered (built in or loaded as a module)."""
    return (
        under(root, "/sys/bus/vmbus/drivers/hv_balloon").is_dir()
        or under(root, "/sys/module/hv_balloon").is_dir()
    )


def effective_order(parameter: int | None) -> tuple[int, bool]:
    """(order in force, whether it is the default) from the raw parameter value.

    Unset reads as -1 (6.3+) or MAX_ORDER, i.e. 11 (5.14-6.2): both mean pageblock_order.
    """
    if parameter is not None and 0 <= parameter <= MAX_BUDDY_ORDER:
        return parameter, False
    return DEFAULT_REPORTING_ORDER, True


def read_reporting_path(root: Path = Path("/")) -> ReportingPath:
    parameter = read_int(root, PAGE_REPORTING_ORDER_FILE)
    order, is_default = effective_order(parameter)
    balloons = read_virtio_balloons(root)
    # Prefer a balloon with a driver: an unbound one negotiates nothing.
    virtio = next((b for b in balloons if b.driver_bound), balloons[0] if balloons else None)
    kind: ReportingKind
    negotiated: bool | None
    if virtio is not None:
        kind, negotiated = "virtio-balloon", virtio.driver_bound and virtio.free_page_reporting
    elif read_hv_balloon(root):
        kind, negotiated = "hv-balloon", None
    else:
        kind, negotiated = "none", False
    return ReportingPath(
        kind=kind,
        negotiated=negotiated,
        order=order,
        order_parameter=parameter,
        order_is_default=is_default,
        order_parameter_present=under(root, PAGE_REPORTING_ORDER_FILE).is_file(),
        virtio=virtio,
    )
