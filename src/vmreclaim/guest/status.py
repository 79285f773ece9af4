"""`vmreclaim guest status`: what is wrong with this guest's path back to the host, and the fix.

Pure functions of an Observation: `diagnose` lists the problems, `render_text` and `render_json`
format the report. Nothing here reads or writes the system.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from vmreclaim.guest.actions import plan_reclaim
from vmreclaim.guest.observe import Observation
from vmreclaim.guest.observe.snapshot import PSI_IO, PSI_MEMORY
from vmreclaim.units import format_size

JSON_SCHEMA_VERSION = 1
QEMU_FPR = "-device virtio-balloon-pci,free-page-reporting=on"
# Memory held in partly freed huge pages that is worth a line of its own (the agent's
# adaptive policy splits them from thp_split_min_bytes, the same 64 MiB).
THP_HELD_PROBLEM_BYTES = 64 << 20


@dataclass(frozen=True)
class Problem:
    """One thing that keeps memory on the host. `code` is stable (for JSON and tests); `message`
    says what is wrong and what to do, in one line."""

    code: str
    message: str


def _reporting_problems(obs: Observation) -> list[Problem]:
    path = obs.reporting
    if path.kind == "none":
        return [Problem("no-balloon", f"no balloon device: start QEMU with {QEMU_FPR}")]
    if path.kind == "hv-balloon":
        return [
            Problem(
                "hv-reporting-unknown",
                "Hyper-V balloon: the guest cannot see whether free page reporting is on; "
                "look for 'Cold memory discard hint enabled' in dmesg",
            )
        ]
    if path.virtio is not None and not path.virtio.driver_bound:
        return [
            Problem(
                "balloon-driver-missing",
                f"balloon device {path.virtio.device} has no driver: run `modprobe virtio_balloon`",
            )
        ]
    if not path.negotiated:
        message = f"free page reporting is not negotiated: start QEMU with {QEMU_FPR}"
        if not path.order_parameter_present:
            message += " and use a kernel with CONFIG_PAGE_REPORTING=y"
        return [Problem("reporting-not-negotiated", message)]
    return []


def _reclaim_problems(obs: Observation) -> list[Problem]:
    interface = obs.reclaim
    problems = []
    if interface.cgroup_mode in ("legacy", "hybrid"):
        where = "cgroup v1 only" if interface.cgroup_mode == "legacy" else "memory on cgroup v1"
        problems.append(
            Problem(
                "no-cgroup2",
                f"cgroup v2 is not mounted at /sys/fs/cgroup ({where}): boot with "
                "systemd.unified_cgroup_hierarchy=1 to get memory.reclaim; until then reclaim "
                "drops all clean cache at once (drop_caches)",
            )
        )
    elif interface.cgroup_mode == "none":
        problems.append(
            Problem(
                "no-cgroup2",
                "no cgroup filesystem at /sys/fs/cgroup: mount cgroup2 there "
                "(`mount -t cgroup2 none /sys/fs/cgroup`) to get memory.reclaim",
            )
        )
    elif not interface.memory_reclaim:
        problems.append(
            Problem(
                "no-memory-reclaim",
                "the root cgroup has no memory.reclaim: use Linux 5.19 or later; until then "
                "reclaim drops all clean cache at once (drop_caches)",
            )
        )
    plan = plan_reclaim(interface, obs.memory.swap_active)
    if interface.memory_reclaim and plan.method != "memory.reclaim":
        problems.append(
            Problem(
                "no-swappiness-key",
                "memory.reclaim takes no swappiness= key before Linux 6.11, swap is on and "
                "vm.swappiness cannot be read: reclaim drops all clean cache (drop_caches=1) "
                "to keep anonymous memory out of swap; use Linux 6.11+ for bounded reclaim",
            )
        )
    if plan.method == "none":
        problems.append(Problem("no-reclaim", f"page cache cannot be reclaimed: {plan.reason}"))
    if not interface.compact_memory:
        problems.append(
            Problem(
                "no-compaction",
                "/proc/sys/vm/compact_memory is missing (CONFIG_COMPACTION=n): free memory in "
                "small blocks can never be reported; use a kernel with compaction",
            )
        )
    return problems


def _huge_page_problems(obs: Observation) -> list[Problem]:
    held = obs.huge_pages.partly_freed_bytes
    if held is None or held < THP_HELD_PROBLEM_BYTES:
        return []
    return [
        Problem(
            "thp-held",
            f"{format_size(held)} is held in huge pages that processes partly freed: free "
            "page reporting cannot return it until the kernel splits them; "
            "`vmreclaim guest reclaim` or the agent (adaptive) splits them and compacts",
        )
    ]


def diagnose(obs: Observation) -> tuple[Problem, ...]:
    """Every problem the observation shows, most important (the reporting path) first."""
    problems = _reporting_problems(obs) + _reclaim_problems(obs) + _huge_page_problems(obs)
    if obs.memory_pressure is None:
        problems.append(
            Problem(
                "psi-missing",
                "PSI missing: boot with psi=1 (kernel needs CONFIG_PSI=y); without it reclaim "
                "cannot back off when memory gets tight",
            )
        )
    unread = [part for part in obs.incomplete if part not in (PSI_MEMORY, PSI_IO)]
    if unread:
        problems.append(
            Problem(
                "incomplete",
                f"could not read {', '.join(unread)}: policies take no action without it",
            )
        )
    return tuple(problems)


def _size(value: int | None) -> str:
    return "unknown" if value is None else format_size(value)


def render_text(obs: Observation, problems: tuple[Problem, ...]) -> str:
    """The report for people: sizes with units, then one line per problem."""
    mem = obs.memory
    path = obs.reporting
    rows = [
        ("kernel", obs.kernel.text if obs.kernel else "unknown"),
        ("total", _size(mem.total_bytes)),
        ("free", _size(mem.free_bytes)),
        ("available", _size(mem.available_bytes)),
        ("anon", _size(mem.anon_bytes)),
        ("active file cache", _size(mem.active_file_bytes)),
        ("inactive file cache", _size(mem.inactive_file_bytes)),
        ("reclaimable slab", _size(mem.reclaimable_slab_bytes)),
        (
            "swap",
            "off"
            if mem.swap_total_bytes == 0
            else f"{_size(mem.swap_free_bytes)} free of {_size(mem.swap_total_bytes)}",
        ),
    ]
    if obs.free is not None:
        rows.append(
            (
                "free, reportable",
                f"{format_size(obs.free.reportable_bytes)} (blocks of order >= {path.order})",
            )
        )
        rows.append(("free, unreportable", format_size(obs.free.unreportable_bytes)))
    thp = obs.huge_pages
    rows.append(("transparent huge pages", thp.mode or "not in this kernel"))
    rows.append(("held in partly freed huge pages", _size(thp.partly_freed_bytes)))
    negotiated = {True: "negotiated", False: "not negotiated", None: "unknown"}[path.negotiated]
    default = " (default)" if path.order_is_default else ""
    rows.append(("reporting", f"{path.kind}, {negotiated}, order {path.order}{default}"))
    plan = plan_reclaim(obs.reclaim, mem.swap_active)
    key = " swappiness=0" if plan.swappiness_key else ""
    rows.append(("reclaim", f"{plan.method}{key} ({plan.reason})"))
    psi = ", ".join(
        f"{name} {'yes' if value is not None else 'no'}"
        for name, value in (("memory", obs.memory_pressure), ("io", obs.io_pressure))
    )
    rows.append(("psi", psi))
    width = max(len(label) for label, _ in rows)
    lines = [f"{label:<{width}}  {value}" for label, value in rows]
    lines.append("")
    lines.extend(f"problem: {problem.message}" for problem in problems)
    if not problems:
        lines.append("no problems found")
    return "\n".join(lines)


def _status_document(obs: Observation, problems: tuple[Problem, ...]) -> dict[str, object]:
    """The JSON report: stable keys, bytes as ints, null where unknown."""
    mem = obs.memory
    path = obs.reporting
    plan = plan_reclaim(obs.reclaim, mem.swap_active)
    free = obs.free
    return {
        "schema": JSON_SCHEMA_VERSION,
        "kernel": obs.kernel.text if obs.kernel else None,
        "page_size": obs.page_size,
        "memory": {
            "total_bytes": mem.total_bytes,
            "free_bytes": mem.free_bytes,
            "available_bytes": mem.available_bytes,
            "anon_bytes": mem.anon_bytes,
            "active_file_bytes": mem.active_file_bytes,
            "inactive_file_bytes": mem.inactive_file_bytes,
            "reclaimable_slab_bytes": mem.reclaimable_slab_bytes,
            "reclaimable_cache_bytes": mem.reclaimable_cache_bytes,
            "swap_total_bytes": mem.swap_total_bytes,
            "swap_free_bytes": mem.swap_free_bytes,
        },
        "free": {
            "reporting_order": path.order,
            "reportable_bytes": free.reportable_bytes if free else None,
            "unreportable_bytes": free.unreportable_bytes if free else None,
            "by_order_bytes": list(free.by_order_bytes) if free else None,
        },
        "reporting": {
            "path": path.kind,
            "negotiated": path.negotiated,
            "order": path.order,
            "order_is_default": path.order_is_default,
            "device": path.virtio.device if path.virtio else None,
            "deflate_on_oom": path.virtio.deflate_on_oom if path.virtio else None,
        },
        "reclaim": {
            "cgroup": obs.reclaim.cgroup_mode,
            "memory_reclaim": obs.reclaim.memory_reclaim,
            "swappiness_key": obs.reclaim.swappiness_key,
            "drop_caches": obs.reclaim.drop_caches,
            "compact_memory": obs.reclaim.compact_memory,
            "method": plan.method,
            "method_reason": plan.reason,
            "holds_swappiness": plan.hold_swappiness,
        },
        "huge_pages": {
            "mode": obs.huge_pages.mode,
            "partly_freed_bytes": obs.huge_pages.partly_freed_bytes,
            "deferred_splits": obs.huge_pages.deferred_splits,
            "splits": obs.huge_pages.splits,
        },
        "psi": {"memory": obs.memory_pressure is not None, "io": obs.io_pressure is not None},
        "problems": [{"code": p.code, "message": p.message} for p in problems],
        "incomplete": list(obs.incomplete),
    }


def render_json(obs: Observation, problems: tuple[Problem, ...]) -> str:
    return json.dumps(_status_document(obs, problems), indent=2, sort_keys=True)
