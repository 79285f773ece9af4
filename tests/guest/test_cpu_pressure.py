from __future__ import annotations

from vmreclaim.guest.observe.cpu import parse_stat_cpu
from vmreclaim.guest.observe.pressure import parse_pressure, read_pressure

from . import kernel_text as k
from .fakeroot import FakeRoot


def test_cpu_line_is_read_in_kernel_column_order():
    cpu = parse_stat_cpu(k.STAT_DEBIAN_6_1)
    assert cpu is not None
    assert (cpu.user, cpu.nice, cpu.system, cpu.idle) == (10132153, 290696, 3084719, 46828483)
    assert (cpu.iowait, cpu.irq, cpu.softirq, cpu.steal) == (16683, 1021, 25195, 4312)


def test_busy_jiffies_count_what_wsl2_counts_as_busy():
    cpu = parse_stat_cpu(k.STAT_DEBIAN_6_1)
    assert cpu is not None
    assert cpu.busy_jiffies == 10132153 + 290696 + 3084719 + 1021 + 25195 + 4312
    assert cpu.total_jiffies == cpu.busy_jiffies + 46828483 + 16683


def test_stat_without_an_aggregate_cpu_line_gives_none():
    assert parse_stat_cpu("cpu0 1 2 3 4 5 6 7 8 0 0\nctxt 5\n") is None


def test_pressure_reads_averages_and_total_stall_time():
    pressure = parse_pressure(k.PSI_MEMORY_STALLING)
    assert pressure is not None
    assert pressure.some.avg10 == 1.53
    assert pressure.some.total_us == 10213349
    assert pressure.full is not None
    assert pressure.full.avg60 == 0.19


def test_idle_pressure_is_all_zero():
    pressure = parse_pressure(k.PSI_MEMORY_IDLE)
    assert pressure is not None
    assert (pressure.some.avg10, pressure.some.total_us) == (0.0, 0)


def test_pressure_without_psi_in_the_kernel_is_none(tmp_path):
    assert read_pressure("memory", tmp_path) is None


def test_pressure_is_read_per_resource(tmp_path):
    root = FakeRoot(tmp_path)
    root.write("/proc/pressure/memory", k.PSI_MEMORY_STALLING)
    root.write("/proc/pressure/io", k.PSI_IO_IDLE)
    io = read_pressure("io", tmp_path)
    assert io is not None
    assert io.some.total_us == 31205
