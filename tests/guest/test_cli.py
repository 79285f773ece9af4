from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from vmreclaim.cli import main
from vmreclaim.errors import UsageError
from vmreclaim.guest.cli import require_root

from . import kernel_text as k
from .fakeroot import FakeRoot, wsl2_guest


def status_json(root: FakeRoot, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert main(["guest", "status", "--json", "--root", str(root.path)]) == 0
    document: dict[str, Any] = json.loads(capsys.readouterr().out)
    return document


def problem_codes(document: dict[str, Any]) -> list[str]:
    return [problem["code"] for problem in document["problems"]]


def test_status_json_gives_memory_in_bytes(debian, capsys):
    memory = status_json(debian, capsys)["memory"]
    assert memory["total_bytes"] == 4012148 * k.KIB
    assert memory["active_file_bytes"] == 181180 * k.KIB
    assert memory["reclaimable_slab_bytes"] == 52180 * k.KIB
    assert memory["swap_free_bytes"] == 0


def test_status_json_splits_free_memory_at_the_reporting_order(debian, capsys):
    free = status_json(debian, capsys)["free"]
    assert free["reporting_order"] == 9
    assert free["reportable_bytes"] == 1320 * k.MIB
    assert free["reportable_bytes"] + free["unreportable_bytes"] == sum(free["by_order_bytes"])


def test_status_json_of_a_healthy_qemu_guest(debian, capsys):
    document = status_json(debian, capsys)
    assert document["reporting"]["path"] == "virtio-balloon"
    assert document["reporting"]["negotiated"] is True
    assert document["reclaim"]["method"] == "memory.reclaim"
    assert document["reclaim"]["swappiness_key"] is False
    assert document["psi"] == {"memory": True, "io": True}
    assert document["problems"] == []


def test_status_json_has_stable_top_level_keys(debian, capsys):
    assert sorted(status_json(debian, capsys)) == [
        "free",
        "huge_pages",
        "incomplete",
        "kernel",
        "memory",
        "page_size",
        "problems",
        "psi",
        "reclaim",
        "reporting",
        "schema",
    ]


def test_status_names_reporting_not_negotiated_with_the_qemu_fix(tmp_path, capsys):
    root = FakeRoot(tmp_path)
    root.virtio_device("virtio0", "0x0005", k.FEATURES_BALLOON_NO_FPR, "virtio_balloon")
    document = status_json(root, capsys)
    assert document["reporting"]["negotiated"] is False
    (problem,) = [p for p in document["problems"] if p["code"] == "reporting-not-negotiated"]
    assert "free-page-reporting=on" in problem["message"]


def test_status_without_psi_says_to_boot_with_psi_1(debian, capsys):
    debian.remove("/proc/pressure/memory")
    debian.remove("/proc/pressure/io")
    document = status_json(debian, capsys)
    assert document["psi"] == {"memory": False, "io": False}
    (problem,) = document["problems"]
    assert problem["code"] == "psi-missing"
    assert "psi=1" in problem["message"]


def test_status_on_cgroup_v1_falls_back_to_drop_caches(debian, capsys):
    debian.write("/proc/self/mounts", k.MOUNTS_CENTOS_7)
    document = status_json(debian, capsys)
    assert document["reclaim"]["cgroup"] == "legacy"
    assert document["reclaim"]["method"] == "drop_caches"
    assert problem_codes(document) == ["no-cgroup2"]
    assert "cgroup v1 only" in document["problems"][0]["message"]


def test_status_without_memory_reclaim_says_which_kernel_has_it(debian, capsys):
    debian.remove("/sys/fs/cgroup/memory.reclaim")
    document = status_json(debian, capsys)
    assert document["reclaim"]["memory_reclaim"] is False
    assert problem_codes(document) == ["no-memory-reclaim"]


def test_status_of_a_hyper_v_guest(tmp_path, capsys):
    document = status_json(wsl2_guest(tmp_path), capsys)
    assert document["reporting"]["path"] == "hv-balloon"
    assert document["reporting"]["negotiated"] is None
    assert document["reporting"]["order"] == 5
    # Linux 6.6 with swap on: memory.reclaim has no swappiness= key, so vm.swappiness is held
    # at 0 while it runs
    assert document["reclaim"]["method"] == "memory.reclaim"
    assert document["reclaim"]["holds_swappiness"] is True
    assert problem_codes(document) == ["hv-reporting-unknown"]


def test_status_of_a_swap_on_guest_without_vm_swappiness_says_reclaim_drops_all_cache(
    tmp_path, capsys
):
    root = wsl2_guest(tmp_path)
    root.remove("/proc/sys/vm/swappiness")
    document = status_json(root, capsys)
    assert document["reclaim"]["method"] == "drop_caches"
    assert problem_codes(document) == ["hv-reporting-unknown", "no-swappiness-key"]


def test_status_with_no_balloon_says_how_to_add_one(debian, capsys):
    debian.remove("/sys/bus/virtio/devices/virtio1/driver")
    for name in ("device", "vendor", "features"):
        debian.remove(f"/sys/bus/virtio/devices/virtio1/{name}")
    document = status_json(debian, capsys)
    assert document["reporting"]["path"] == "none"
    assert "virtio-balloon-pci" in document["problems"][0]["message"]


def test_status_text_prints_one_line_per_problem(debian, capsys):
    debian.remove("/proc/pressure/memory")
    assert main(["guest", "status", "--root", str(debian.path)]) == 0
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if line.startswith("problem:")] == [
        "problem: PSI missing: boot with psi=1 (kernel needs CONFIG_PSI=y); without it reclaim "
        "cannot back off when memory gets tight"
    ]
    assert "1.3 GiB" in out  # reportable free memory, printed with units


def test_reclaim_flushes_the_per_cpu_lists_before_compacting_and_restores_their_ceiling(
    debian, capsys
):
    debian.write("/proc/sys/vm/percpu_pagelist_high_fraction", "0\n")
    assert main(["guest", "reclaim", "--json", "--keep", "256M", "--root", str(debian.path)]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["percpu_lists_flushed"] is True
    assert debian.read("/proc/sys/vm/percpu_pagelist_high_fraction") == "0"


def test_status_text_of_a_healthy_guest_says_so(debian, capsys):
    assert main(["guest", "status", "--root", str(debian.path)]) == 0
    assert "no problems found" in capsys.readouterr().out


def test_reclaim_writes_memory_reclaim_then_compacts(debian, capsys):
    assert main(["guest", "reclaim", "--json", "--keep", "256M", "--root", str(debian.path)]) == 0
    document = json.loads(capsys.readouterr().out)
    cache = (181180 + 528476 + 52180) * k.KIB
    assert document["reclaim"]["requested_bytes"] == cache - 256 * k.MIB
    assert document["reclaim"]["stop"] == "done"
    assert document["compacted"] is True
    assert document["percpu_lists_flushed"] is False  # this kernel text has no ceiling knob
    assert debian.read("/proc/sys/vm/compact_memory") == "1"
    # the last write: what was left after the 256 MiB writes, page aligned
    requested = cache - 256 * k.MIB
    assert debian.read("/sys/fs/cgroup/memory.reclaim") == str(requested % (256 * k.MIB))


def test_reclaim_reports_free_memory_before_and_after(debian, capsys):
    assert main(["guest", "reclaim", "--json", "--root", str(debian.path)]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["free"]["before"]["reportable_bytes"] == 1320 * k.MIB
    assert set(document["free"]["after"]) == {"reportable_bytes", "unreportable_bytes"}
    assert document["keep_bytes"] == 128 * k.MIB


def test_reclaim_with_the_cache_below_keep_does_nothing_but_compact(debian, capsys):
    assert main(["guest", "reclaim", "--json", "--keep", "4G", "--root", str(debian.path)]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["reclaim"] is None
    assert debian.read("/sys/fs/cgroup/memory.reclaim") == ""


def test_reclaim_with_a_bad_size_is_a_usage_error(debian, capsys):
    assert main(["guest", "reclaim", "--keep", "lots", "--root", str(debian.path)]) == 2
    err = capsys.readouterr().err
    assert "bad size 'lots'" in err
    assert "hint:" in err


def test_reclaim_with_a_bad_reporting_order_writes_nothing(debian, capsys):
    argv = ["guest", "reclaim", "--reporting-order", "12", "--root", str(debian.path)]
    assert main(argv) == 2
    assert "bad reporting order 12" in capsys.readouterr().err
    assert debian.read("/sys/fs/cgroup/memory.reclaim") == ""
    assert debian.read("/proc/sys/vm/compact_memory") == "0\n"


def test_reclaim_sets_the_reporting_order_when_asked(debian, capsys):
    argv = ["guest", "reclaim", "--reporting-order", "5", "--json", "--root", str(debian.path)]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["reporting_order"] == 5
    assert debian.read("/sys/module/page_reporting/parameters/page_reporting_order") == "5"


def test_reclaim_text_reports_what_changed(debian, capsys):
    assert main(["guest", "reclaim", "--root", str(debian.path)]) == 0
    out = capsys.readouterr().out
    assert "reclaim: memory.reclaim" in out
    assert "free, reportable: 1.3 GiB -> 1.3 GiB" in out


def test_reclaim_of_the_real_system_requires_root():
    with pytest.raises(UsageError) as caught:
        require_root(Path("/"), euid=1000)
    assert caught.value.hint is not None


def test_reclaim_of_a_fake_tree_does_not_require_root(tmp_path):
    require_root(tmp_path, euid=1000)


def test_the_bundle_is_one_file_that_runs_the_agent_without_the_package(tmp_path) -> None:
    import os
    import subprocess
    import sys

    from vmreclaim.guest.bundle import build_bundle

    bundle = tmp_path / "vmreclaim.pyz"
    assert build_bundle(bundle) == bundle.stat().st_size
    assert os.access(bundle, os.X_OK)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            str(bundle),
            "guest",
            "status",
            "--json",
            "--root",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert '"schema": 1' in done.stdout
