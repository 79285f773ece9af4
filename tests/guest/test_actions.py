from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from vmreclaim.errors import MissingDependencyError, UsageError, VmreclaimError
from vmreclaim.guest.actions import (
    MAX_RECLAIM_WRITE_BYTES,
    PCP_FLUSH_BYTES,
    PCP_FLUSH_FRACTION,
    _free_own_pages,
    compact_memory,
    drop_caches,
    percpu_lists_flushed,
    plan_reclaim,
    reclaim_cache,
    reclaim_memory,
    restore_percpu_ceiling,
    restore_swappiness,
    set_reporting_order,
    split_huge_pages,
    swappiness_held_at_zero,
    write_control_file,
)
from vmreclaim.guest.observe.kernel import ReclaimInterface

from . import kernel_text as k

MEMORY_RECLAIM = Path("sys/fs/cgroup/memory.reclaim")
DROP_CACHES = Path("proc/sys/vm/drop_caches")
SWAPPINESS = Path("proc/sys/vm/swappiness")
SAVED_SWAPPINESS = Path("run/vmreclaim/swappiness.saved")
PCP_HIGH_FRACTION = Path("proc/sys/vm/percpu_pagelist_high_fraction")
COMPACT_MEMORY = Path("proc/sys/vm/compact_memory")


class FakeWriter:
    """Records (path under root, text) per write; raises the errno scripted for a write index.
    With `through`, a write that succeeds also lands in the file, as the kernel's knob would."""

    def __init__(
        self, root: Path, errors: dict[int, int] | None = None, *, through: bool = False
    ) -> None:
        self.root = root
        self.errors = errors or {}
        self.through = through
        self.writes: list[tuple[Path, str]] = []

    def __call__(self, path: Path, text: str) -> None:
        self.writes.append((path.relative_to(self.root), text))
        code = self.errors.get(len(self.writes) - 1)
        if code is not None:
            raise OSError(code, errno.errorcode[code])
        if self.through:
            path.write_text(text)


def knob_file(root: Path, knob: Path, value: int) -> Path:
    """A kernel knob under `root` holding `value`, as the kernel prints it."""
    path = root / knob
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{value}\n")
    return path


def swappiness_file(root: Path, value: int) -> Path:
    return knob_file(root, SWAPPINESS, value)


class FakeClock:
    def __init__(self, step: float = 0.0) -> None:
        self.now = 100.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def interface(**changes: object) -> ReclaimInterface:
    values: dict[str, object] = {
        "cgroup_mode": "unified",
        "memory_reclaim": True,
        "swappiness_key": True,
        "drop_caches": True,
        "compact_memory": True,
        "vm_swappiness": 60,
    }
    values.update(changes)
    return ReclaimInterface(**values)  # type: ignore[arg-type]


# plan_reclaim


def test_plan_uses_the_swappiness_key_where_the_kernel_has_it():
    plan = plan_reclaim(interface(), swap_active=True)
    assert (plan.method, plan.swappiness_key) == ("memory.reclaim", True)


def test_plan_without_key_and_without_swap_uses_plain_memory_reclaim():
    plan = plan_reclaim(interface(swappiness_key=False), swap_active=False)
    assert (plan.method, plan.swappiness_key) == ("memory.reclaim", False)


def test_plan_without_key_with_swap_holds_vm_swappiness_at_zero():
    # Linux 5.19-6.10 with swap (WSL2's kernels): bounded reclaim, file pages only.
    plan = plan_reclaim(interface(swappiness_key=False), swap_active=True)
    assert (plan.method, plan.swappiness_key, plan.hold_swappiness) == (
        "memory.reclaim",
        False,
        True,
    )


def test_plan_without_key_with_swap_and_no_hold_falls_back_to_drop_caches():
    plan = plan_reclaim(interface(swappiness_key=False), swap_active=True, hold_swappiness=False)
    assert plan.method == "drop_caches"


def test_plan_without_key_with_swap_and_unreadable_swappiness_falls_back_to_drop_caches():
    plan = plan_reclaim(interface(swappiness_key=False, vm_swappiness=None), swap_active=True)
    assert plan.method == "drop_caches"


def test_plan_with_the_key_needs_no_hold():
    assert not plan_reclaim(interface(), swap_active=True).hold_swappiness


def test_plan_without_key_with_swap_but_vm_swappiness_0_uses_memory_reclaim():
    plan = plan_reclaim(interface(swappiness_key=False, vm_swappiness=0), swap_active=True)
    assert plan.method == "memory.reclaim"


def test_plan_without_key_with_swap_allowed_uses_memory_reclaim():
    plan = plan_reclaim(interface(swappiness_key=False), swap_active=True, allow_swap=True)
    assert plan.method == "memory.reclaim"


def test_plan_on_cgroup_v1_uses_drop_caches():
    plan = plan_reclaim(
        interface(cgroup_mode="legacy", memory_reclaim=False, swappiness_key=False), False
    )
    assert plan.method == "drop_caches"


def test_plan_with_no_knob_at_all_is_none():
    plan = plan_reclaim(
        interface(memory_reclaim=False, swappiness_key=False, drop_caches=False), False
    )
    assert plan.method == "none"


# reclaim_memory


def test_reclaim_is_split_into_writes_of_at_most_256_mib(tmp_path):
    writer = FakeWriter(tmp_path)
    result = reclaim_memory(tmp_path, 600 * k.MIB, swappiness_key=True, writer=writer)
    assert writer.writes == [
        (MEMORY_RECLAIM, f"{MAX_RECLAIM_WRITE_BYTES} swappiness=0"),
        (MEMORY_RECLAIM, f"{MAX_RECLAIM_WRITE_BYTES} swappiness=0"),
        (MEMORY_RECLAIM, f"{88 * k.MIB} swappiness=0"),
    ]
    assert (result.stop, result.confirmed_bytes, result.writes) == ("done", 600 * k.MIB, 3)


def test_reclaim_without_the_key_writes_the_bare_amount(tmp_path):
    writer = FakeWriter(tmp_path)
    reclaim_memory(tmp_path, 8 * k.MIB, swappiness_key=False, writer=writer)
    assert writer.writes == [(MEMORY_RECLAIM, str(8 * k.MIB))]


def test_reclaim_amounts_are_rounded_down_to_whole_pages(tmp_path):
    writer = FakeWriter(tmp_path)
    reclaim_memory(tmp_path, 3 * 4096 + 100, swappiness_key=False, writer=writer)
    assert writer.writes == [(MEMORY_RECLAIM, str(3 * 4096))]


def test_reclaim_of_less_than_a_page_writes_nothing(tmp_path):
    writer = FakeWriter(tmp_path)
    result = reclaim_memory(tmp_path, 4095, swappiness_key=True, writer=writer)
    assert writer.writes == []
    assert result.stop == "done"


def test_eagain_stops_reclaim_as_a_partial_success(tmp_path):
    writer = FakeWriter(tmp_path, errors={1: errno.EAGAIN})
    result = reclaim_memory(tmp_path, 1024 * k.MIB, swappiness_key=True, writer=writer)
    assert result.stop == "eagain"
    assert result.writes == 2
    assert result.confirmed_bytes == MAX_RECLAIM_WRITE_BYTES


def test_time_limit_stops_reclaim_between_writes(tmp_path):
    writer = FakeWriter(tmp_path)
    clock = FakeClock(step=1.0)  # every clock read advances one second
    result = reclaim_memory(
        tmp_path, 2048 * k.MIB, swappiness_key=True, time_limit_s=2.5, clock=clock, writer=writer
    )
    assert result.stop == "time-limit"
    assert result.writes == 2  # clock reads at +1 s and +2 s allow a write, +3 s does not


def test_einval_on_the_key_reports_the_key_rejected(tmp_path):
    writer = FakeWriter(tmp_path, errors={0: errno.EINVAL})
    result = reclaim_memory(tmp_path, 64 * k.MIB, swappiness_key=True, writer=writer)
    assert (result.stop, result.confirmed_bytes) == ("key-rejected", 0)


def test_permission_denied_says_to_run_as_root(tmp_path):
    writer = FakeWriter(tmp_path, errors={0: errno.EACCES})
    with pytest.raises(UsageError) as caught:
        reclaim_memory(tmp_path, 64 * k.MIB, swappiness_key=True, writer=writer)
    assert caught.value.hint is not None
    assert "root" in caught.value.hint
    assert isinstance(caught.value.__cause__, OSError)


def test_other_write_errors_keep_their_cause(tmp_path):
    writer = FakeWriter(tmp_path, errors={0: errno.EIO})
    with pytest.raises(VmreclaimError) as caught:
        reclaim_memory(tmp_path, 64 * k.MIB, swappiness_key=False, writer=writer)
    assert isinstance(caught.value.__cause__, OSError)


# reclaim_cache


def test_rejected_key_without_swap_retries_without_the_key(tmp_path):
    writer = FakeWriter(tmp_path, errors={0: errno.EINVAL})
    result = reclaim_cache(tmp_path, 64 * k.MIB, interface(), swap_active=False, writer=writer)
    assert writer.writes[1] == (MEMORY_RECLAIM, str(64 * k.MIB))
    assert (result.plan.method, result.plan.swappiness_key) == ("memory.reclaim", False)


def test_rejected_key_with_swap_reclaims_with_vm_swappiness_held_at_zero(tmp_path):
    swappiness_file(tmp_path, 60)
    (tmp_path / MEMORY_RECLAIM).parent.mkdir(parents=True)
    (tmp_path / MEMORY_RECLAIM).write_text("")
    writer = FakeWriter(tmp_path, errors={0: errno.EINVAL}, through=True)
    result = reclaim_cache(tmp_path, 64 * k.MIB, interface(), swap_active=True, writer=writer)
    assert writer.writes[1:] == [
        (SWAPPINESS, "0"),
        (MEMORY_RECLAIM, str(64 * k.MIB)),
        (SWAPPINESS, "60"),
    ]
    assert result.plan.hold_swappiness


def test_rejected_key_with_swap_and_no_swappiness_falls_back_to_drop_caches(tmp_path):
    writer = FakeWriter(tmp_path, errors={0: errno.EINVAL})
    bare = interface(vm_swappiness=None)
    result = reclaim_cache(tmp_path, 64 * k.MIB, bare, swap_active=True, writer=writer)
    assert writer.writes[1] == (DROP_CACHES, "1")
    assert result.plan.method == "drop_caches"


# vm.swappiness held at 0


def test_hold_sets_zero_for_the_block_and_restores_the_value(tmp_path):
    path = swappiness_file(tmp_path, 60)
    writer = FakeWriter(tmp_path, through=True)
    with swappiness_held_at_zero(tmp_path, writer=writer):
        assert path.read_text() == "0"
        assert (tmp_path / SAVED_SWAPPINESS).read_text() == "60\n"
    assert path.read_text() == "60"
    assert not (tmp_path / SAVED_SWAPPINESS).exists()


def test_hold_restores_the_value_when_the_block_raises(tmp_path):
    path = swappiness_file(tmp_path, 35)
    writer = FakeWriter(tmp_path, through=True)
    with pytest.raises(RuntimeError), swappiness_held_at_zero(tmp_path, writer=writer):
        raise RuntimeError("reclaim failed")
    assert path.read_text() == "35"


def test_hold_at_zero_already_writes_nothing(tmp_path):
    swappiness_file(tmp_path, 0)
    writer = FakeWriter(tmp_path, through=True)
    with swappiness_held_at_zero(tmp_path, writer=writer):
        pass
    assert writer.writes == []


def test_hold_keeps_a_value_someone_else_set_meanwhile(tmp_path):
    path = swappiness_file(tmp_path, 60)
    writer = FakeWriter(tmp_path, through=True)
    with swappiness_held_at_zero(tmp_path, writer=writer):
        path.write_text("10\n")
    assert path.read_text() == "10\n"
    assert writer.writes == [(SWAPPINESS, "0")]


def test_hold_without_vm_swappiness_says_what_is_missing(tmp_path):
    with pytest.raises(MissingDependencyError), swappiness_held_at_zero(tmp_path):
        pass


def test_a_hold_left_by_a_killed_agent_is_undone_at_the_next_start(tmp_path):
    path = swappiness_file(tmp_path, 0)
    (tmp_path / SAVED_SWAPPINESS).parent.mkdir(parents=True)
    (tmp_path / SAVED_SWAPPINESS).write_text("60\n")
    assert restore_swappiness(tmp_path, writer=FakeWriter(tmp_path, through=True)) == 60
    assert path.read_text() == "60"
    assert not (tmp_path / SAVED_SWAPPINESS).exists()


def test_a_saved_value_is_forgotten_when_someone_changed_swappiness_since(tmp_path):
    path = swappiness_file(tmp_path, 30)
    (tmp_path / SAVED_SWAPPINESS).parent.mkdir(parents=True)
    (tmp_path / SAVED_SWAPPINESS).write_text("60\n")
    assert restore_swappiness(tmp_path) is None
    assert path.read_text() == "30\n"
    assert not (tmp_path / SAVED_SWAPPINESS).exists()


def test_nothing_to_restore_without_a_saved_value(tmp_path):
    swappiness_file(tmp_path, 0)
    assert restore_swappiness(tmp_path) is None


# splitting partly freed huge pages


def test_split_huge_pages_runs_the_shrinkers_without_dropping_page_cache(tmp_path):
    writer = FakeWriter(tmp_path)
    split_huge_pages(tmp_path, writer=writer)
    assert writer.writes == [(DROP_CACHES, "2")]


def test_reclaim_cache_with_no_method_says_what_is_missing(tmp_path):
    bare = interface(memory_reclaim=False, swappiness_key=False, drop_caches=False)
    with pytest.raises(MissingDependencyError):
        reclaim_cache(tmp_path, k.MIB, bare, swap_active=False, writer=FakeWriter(tmp_path))


# drop_caches, compaction, reporting order


def test_drop_caches_writes_1_for_page_cache_only(tmp_path):
    writer = FakeWriter(tmp_path)
    result = drop_caches(tmp_path, writer=writer)
    assert writer.writes == [(DROP_CACHES, "1")]
    assert result.confirmed_bytes is None


def test_drop_caches_rejects_values_the_kernel_does_not_know(tmp_path):
    with pytest.raises(UsageError):
        drop_caches(tmp_path, 4, writer=FakeWriter(tmp_path))


def test_compaction_writes_1_to_compact_memory(tmp_path):
    writer = FakeWriter(tmp_path)
    compact_memory(tmp_path, writer=writer)
    assert writer.writes == [(COMPACT_MEMORY, "1")]


def pcp_ceiling_file(root: Path, value: int) -> Path:
    return knob_file(root, PCP_HIGH_FRACTION, value)


class PageFreer:
    """Stands in for the agent's own page frees; records what the ceiling was meanwhile."""

    def __init__(self, root: Path, error: Exception | None = None) -> None:
        self.root = root
        self.error = error
        self.calls: list[tuple[int, str]] = []

    def __call__(self, size: int) -> None:
        self.calls.append((size, (self.root / PCP_HIGH_FRACTION).read_text().strip()))
        if self.error is not None:
            raise self.error


def test_flushing_the_per_cpu_lists_frees_pages_under_a_lowered_ceiling_kept_until_the_end(
    tmp_path,
):
    pcp_ceiling_file(tmp_path, 0)
    writer, freer = FakeWriter(tmp_path, through=True), PageFreer(tmp_path)
    with percpu_lists_flushed(tmp_path, writer=writer, free_pages=freer) as flushed:
        assert flushed
        assert freer.calls == [(PCP_FLUSH_BYTES, str(PCP_FLUSH_FRACTION))]
        # Still down inside: what the block frees goes on flushing the lists.
        assert (tmp_path / PCP_HIGH_FRACTION).read_text() == str(PCP_FLUSH_FRACTION)
    assert writer.writes == [(PCP_HIGH_FRACTION, str(PCP_FLUSH_FRACTION)), (PCP_HIGH_FRACTION, "0")]


def test_a_ceiling_someone_set_is_put_back_as_it_was(tmp_path):
    pcp_ceiling_file(tmp_path, 40)
    writer = FakeWriter(tmp_path, through=True)
    with percpu_lists_flushed(tmp_path, writer=writer, free_pages=PageFreer(tmp_path)) as flushed:
        assert flushed
    assert (tmp_path / PCP_HIGH_FRACTION).read_text() == "40"


def test_the_ceiling_is_restored_when_freeing_pages_fails(tmp_path):
    pcp_ceiling_file(tmp_path, 0)
    writer = FakeWriter(tmp_path, through=True)
    freer = PageFreer(tmp_path, MemoryError())
    held = percpu_lists_flushed(tmp_path, writer=writer, free_pages=freer)
    with pytest.raises(MemoryError), held:
        pass
    assert writer.writes[-1] == (PCP_HIGH_FRACTION, "0")


def test_the_ceiling_is_restored_when_the_block_fails(tmp_path):
    pcp_ceiling_file(tmp_path, 0)
    writer = FakeWriter(tmp_path, through=True)
    held = percpu_lists_flushed(tmp_path, writer=writer, free_pages=PageFreer(tmp_path))
    with pytest.raises(KeyboardInterrupt), held:
        raise KeyboardInterrupt
    assert (tmp_path / PCP_HIGH_FRACTION).read_text() == "0"


def test_pages_that_cannot_be_mapped_skip_the_flush_and_restore_the_ceiling(tmp_path):
    pcp_ceiling_file(tmp_path, 0)
    writer = FakeWriter(tmp_path, through=True)
    freer = PageFreer(tmp_path, OSError(errno.ENOMEM, "no memory"))
    with percpu_lists_flushed(tmp_path, writer=writer, free_pages=freer) as flushed:
        assert not flushed
    assert writer.writes[-1] == (PCP_HIGH_FRACTION, "0")


def test_without_the_ceiling_knob_nothing_is_flushed(tmp_path):
    writer, freer = FakeWriter(tmp_path), PageFreer(tmp_path)
    with percpu_lists_flushed(tmp_path, writer=writer, free_pages=freer) as flushed:
        assert not flushed
    assert writer.writes == []
    assert freer.calls == []


def test_a_read_only_ceiling_skips_the_flush_without_an_error(tmp_path):
    pcp_ceiling_file(tmp_path, 0)
    writer, freer = FakeWriter(tmp_path, errors={0: errno.EROFS}), PageFreer(tmp_path)
    with percpu_lists_flushed(tmp_path, writer=writer, free_pages=freer) as flushed:
        assert not flushed
    assert freer.calls == []


def test_compaction_flushes_the_per_cpu_lists_first_and_runs_with_their_ceiling_down(tmp_path):
    """The pages a compaction frees must not refill the lists and pin the blocks it emptied."""
    pcp_ceiling_file(tmp_path, 0)
    writer = FakeWriter(tmp_path, through=True)
    (tmp_path / COMPACT_MEMORY).write_text("0\n")
    result = compact_memory(tmp_path, writer=writer, free_pages=PageFreer(tmp_path))
    assert writer.writes == [
        (PCP_HIGH_FRACTION, str(PCP_FLUSH_FRACTION)),
        (COMPACT_MEMORY, "1"),
        (PCP_HIGH_FRACTION, "0"),
    ]
    assert result.flushed


def test_a_kernel_without_compaction_gets_the_ceiling_back(tmp_path):
    pcp_ceiling_file(tmp_path, 0)
    writer = FakeWriter(tmp_path, through=True, errors={1: errno.ENOENT})
    with pytest.raises(MissingDependencyError):
        compact_memory(tmp_path, writer=writer, free_pages=PageFreer(tmp_path))
    assert (tmp_path / PCP_HIGH_FRACTION).read_text() == "0"


def test_a_ceiling_left_lowered_by_a_killed_agent_is_restored_at_start(tmp_path):
    pcp_ceiling_file(tmp_path, PCP_FLUSH_FRACTION)
    writer = FakeWriter(tmp_path, through=True)
    assert restore_percpu_ceiling(tmp_path, writer=writer)
    assert (tmp_path / PCP_HIGH_FRACTION).read_text() == "0"


def test_a_ceiling_at_another_value_is_not_touched_at_start(tmp_path):
    pcp_ceiling_file(tmp_path, 40)
    writer = FakeWriter(tmp_path)
    assert not restore_percpu_ceiling(tmp_path, writer=writer)
    assert writer.writes == []


def test_freeing_its_own_pages_visits_each_cpu_and_leaves_the_affinity_as_it_was():
    # Runs for real: madvise(MADV_NOHUGEPAGE), the page-by-page writes and the moves from CPU to
    # CPU; a kernel or Python that refused any of them would fail every compaction's flush.
    before = os.sched_getaffinity(0)
    _free_own_pages(PCP_FLUSH_BYTES)
    assert os.sched_getaffinity(0) == before


def test_compaction_missing_from_the_kernel_is_a_missing_dependency(tmp_path):
    writer = FakeWriter(tmp_path, errors={0: errno.ENOENT})
    with pytest.raises(MissingDependencyError) as caught:
        compact_memory(tmp_path, writer=writer)
    assert caught.value.hint is not None
    assert "CONFIG_COMPACTION" in caught.value.hint


def test_reporting_order_is_written_to_the_module_parameter(tmp_path):
    writer = FakeWriter(tmp_path)
    set_reporting_order(tmp_path, 5, writer=writer)
    assert writer.writes == [
        (Path("sys/module/page_reporting/parameters/page_reporting_order"), "5")
    ]


@pytest.mark.parametrize("order", [-1, 11])
def test_reporting_order_outside_the_buddy_orders_is_refused(tmp_path, order):
    with pytest.raises(UsageError):
        set_reporting_order(tmp_path, order, writer=FakeWriter(tmp_path))


# the real writer


def test_control_file_holds_exactly_the_last_write(tmp_path):
    knob = tmp_path / "memory.reclaim"
    knob.write_text("")
    write_control_file(knob, "268435456 swappiness=0")
    write_control_file(knob, "4096")
    assert knob.read_text() == "4096"


def test_control_file_is_never_created(tmp_path):
    with pytest.raises(FileNotFoundError):
        write_control_file(tmp_path / "memory.reclaim", "4096")
    assert not (tmp_path / "memory.reclaim").exists()
