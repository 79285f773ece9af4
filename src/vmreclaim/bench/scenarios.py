"""Scenarios: what the guest does, phase by phase. Each phase starts a guest script (in the
background, so the host keeps sampling) and lasts a fixed time; the harness marks where each
phase begins. Amounts fit a 2 GiB guest."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from vmreclaim.workloads.database import server_log

MIB = 1 << 20
W = "python3 -m vmreclaim.workloads"
# The hot set's re-reads stop when HOT_STOP exists and then write their summary to HOT_REPORT.
HOT_STOP = "/tmp/hot.stop"
HOT_REPORT = "/tmp/hot.json"
# The Go heap program (thp-heap-freed) frees its heap once HEAP_RELEASE exists and then writes
# what it freed to HEAP_REPORT (vmreclaim.workloads.runtime_heap.HeapReport as JSON).
HEAP_RELEASE = "/tmp/heap.release"
HEAP_REPORT = "/tmp/heap.json"
# pgbench (the pgbench-* scenarios) logs every transaction under PGBENCH_LOGS, runs until
# PGBENCH_STOP exists and then writes when it ran to PGBENCH_REPORT
# (vmreclaim.workloads.database.PgbenchRun as JSON), with the time COLD_MARK was made: the
# moment the cold writer started, on the guest's clock. The writer makes COLD_DONE when it ends.
PGBENCH_LOGS = "/tmp/pgbench/log"
PGBENCH_STOP = "/tmp/pgbench.stop"
PGBENCH_REPORT = "/tmp/pgbench.json"
PGBENCH_OUTPUT = "/tmp/pgbench.out"
COLD_MARK = "/tmp/cold.mark"
# Made once the cold writer has written and synced every file.
COLD_DONE = "/tmp/cold.done"
# The database's cluster on the scratch disk, and its server's log.
DATABASE_DIR = "/mnt/scratch/postgres/data"
DATABASE_LOG = str(server_log(Path(DATABASE_DIR)))


@dataclass(frozen=True)
class Phase:
    name: str
    seconds: float
    script: str = ""
    """Shell run at the phase's start, in the background unless `wait` is set."""
    wait: bool = False
    """Run the script to its end before the phase's clock starts (e.g. writing files)."""
    guest_clock: bool = False
    """`seconds` are the guest's (its /proc/uptime), not the host's. Under --icount the
    guest's clock runs 0.17 to 0.5 s per host second: a phase of 150 host s gave the agent 51
    s of its own, and every delay in its law (drop-behind's wait, compaction's settling) is
    counted on that clock, as a user's is on real hardware."""


@dataclass(frozen=True)
class Database:
    """PostgreSQL 15 with pgbench's tables on the scratch disk, and pgbench's clients."""

    scale: int
    """pgbench -s: 100,000 accounts each, about 16 MiB of tables and indexes."""
    shared_buffers: str
    clients: int
    select_only: bool
    """pgbench -S (one SELECT by primary key) instead of its TPC-B-like read-write script."""
    window_s: float
    """Guest seconds from the cold writer's start over which throughput and latency are
    compared. Fixed on the guest's clock, so that every contender's window holds the same
    guest work: under --icount the guest runs 0.3 to 0.5 guest seconds per host second, as
    the host's other load allows, and a window to the run's end held 51 guest s in one run
    and 74 in the next, with the writer busy throughout the one and done early in the other."""


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    phases: tuple[Phase, ...]
    cold_bytes: int = 0
    """Cache written once and never read again (busy-with-cold-cache)."""
    hot_bytes: int = 0
    """A file set re-read in a loop; its pass times and refaults are reported."""
    fragmented_bytes: int = 0
    """Free memory left in single pages (fragmented-free)."""
    setup: str = ""
    """Shell run to its end before the agent starts and the recording begins: the state the
    guest is in at rest (a swap file, memory held throughout)."""
    swap_bytes: int = 0
    """A swap file of this size is on from the start; swap use over the run is reported."""
    runtime_heap_bytes: int = 0
    """A runtime's heap freed at the last phase's start (thp-heap-freed); what it freed and
    what of that left the host is reported."""
    database: Database | None = None
    """A database loaded in `setup` and queried by pgbench throughout; its throughput and
    latency are reported."""
    source_package: str = ""
    """A Debian source package (downloaded by scripts/setup, see bench.sources) whose files
    the scratch disk holds from the start; its version is recorded with the run."""

    @property
    def seconds(self) -> float:
        return sum(phase.seconds for phase in self.phases)


def build_then_idle(quick: bool) -> Scenario:
    # More anonymous memory than files: the cache reuses freed pages the guest already backs,
    # so only the difference shows what free page reporting returns on its own.
    anon, files = (512 * MIB, 256 * MIB) if quick else (1024 * MIB, 512 * MIB)
    # WSL2 acts after 2 minutes of idle, counted from its first idle 10 s sample after the
    # writes settle, and gradual then steps 256 MiB every 10 s: the full run's idle phase leaves
    # room for all of that (160 s did not: its window completed as the run ended).
    idle = 40.0 if quick else 240.0
    return Scenario(
        "build-then-idle",
        "allocate and free anonymous memory, write files, then go idle",
        (
            Phase("build", 10.0, f"{W} alloc {anon} --hold 5 >/dev/null 2>&1", wait=True),
            Phase("write", 5.0, f"{W} write-files /mnt/scratch/build {files}", wait=True),
            Phase("idle", idle),
        ),
    )


# build-real's pinned source package and where its build writes its log in the guest.
BUILD_PACKAGE = "sqlite3"
BUILD_LOG = "/mnt/scratch/build.log"


def build_real(quick: bool) -> Scenario:
    """A real build: Debian 12's sqlite3 source (108 MB unpacked) with the upstream's own
    Makefile.linux-gcc, which compiles its generators (lemon, mkkeywordhash) and runs tclsh to
    make the 8 MB amalgamation sqlite3.c; then gcc -O0 compiles that into the sqlite3 shell
    (cc1 peaks near 270 MiB, measured natively). The full form takes about 4 minutes under
    --icount 0; the quick form stops after the amalgamation."""
    # The host's GNU tools first: busybox's ar and tar lack what make and xz archives need.
    steps = [
        "export PATH=/usr/bin:/usr/sbin:$PATH",
        "cd /mnt/scratch",
        "mkdir src build",
        f"tar -xJf {BUILD_PACKAGE}_*.orig.tar.xz -C src --strip-components=1",
        "cd build",
        "make -f ../src/Makefile.linux-gcc TOP=../src sqlite3.c",
    ]
    if not quick:
        steps.append("gcc -O0 -DSQLITE_THREADSAFE=0 -o sqlite3 shell.c sqlite3.c -lm -ldl")
    script = (
        f"{{ {' && '.join(steps)}; }} >{BUILD_LOG} 2>&1 || "
        f"{{ echo 'the build failed:' >&2; tail -n 30 {BUILD_LOG} >&2; exit 1; }}"
    )
    # As build-then-idle: the full run leaves WSL2's 2-minute idle window time to complete.
    idle = 40.0 if quick else 240.0
    return Scenario(
        "build-real",
        f"build Debian's {BUILD_PACKAGE} source in the guest with make, tclsh and gcc, then "
        "go idle",
        # Idle starts as the build ends: "N s after idle" counts from the build's end, and what a
        # policy returns as the compilers exit counts towards it.
        (Phase("build", 0.0, script, wait=True), Phase("idle", idle)),
        source_package=BUILD_PACKAGE,
    )


def busy_with_cold_cache(quick: bool) -> Scenario:
    hot, cold = (96 * MIB, 384 * MIB) if quick else (192 * MIB, 768 * MIB)
    seconds = 60.0 if quick else 150.0
    busy = f"{W} busy --duty 0.05 --seconds 100000 >/dev/null 2>&1"
    # The host ends the re-reads when the scenario ends (HOT_STOP), on its clock: a guest on an
    # instruction-counting clock runs slower than the host's. The time limit is a safety net.
    reread = (
        f"{W} reread /mnt/scratch/hot --seconds {10 * seconds:.0f} --pause 1 "
        f"--until {HOT_STOP} --report {HOT_REPORT} >/dev/null 2>&1"
    )
    return Scenario(
        "busy-with-cold-cache",
        "a light CPU load and a hot file set re-read in a loop, plus a large file written once",
        (
            # Braces: only the load goes to the background. `write && load &` sent the write
            # there too, so the re-reads began on a hot set still being written.
            Phase(
                "prepare",
                5.0,
                f"{W} write-files /mnt/scratch/hot {hot} && {{ {busy} & }}",
                wait=True,
            ),
            Phase("hot", 5.0, reread),
            Phase("cold-write", seconds, f"{W} write-files /mnt/scratch/cold {cold}"),
        ),
        cold_bytes=cold,
        hot_bytes=hot,
    )


def busy_with_cold_cache_swap(quick: bool) -> Scenario:
    """busy-with-cold-cache in a guest with swap, as WSL2 gives its guests, and idle anonymous
    memory held throughout that reclaim could push to swap instead of the cold cache."""
    swap, idle = 512 * MIB, 600 * MIB
    swap_file = "/mnt/scratch/swapfile"
    # fallocate, not dd: writing the file would leave 512 MiB of page cache behind at rest.
    setup = (
        f"fallocate -l {swap} {swap_file} && chmod 600 {swap_file} && "
        f"mkswap {swap_file} >/dev/null && swapon {swap_file} && "
        f"{_background_until_ready(f'{W} alloc {idle} --hold 100000', '/tmp/idle.ready')}"
    )
    return replace(
        busy_with_cold_cache(quick),
        name="busy-with-cold-cache-swap",
        description="busy-with-cold-cache with a 512 MiB swap file and 600 MiB of idle "
        "anonymous memory held throughout",
        setup=setup,
        swap_bytes=swap,
    )


def _background_until_ready(command: str, ready: str) -> str:
    """`command --ready READY` in the background, waited for until READY exists; its output
    and a failure if it ends first, so a broken workload fails the run instead of hanging it."""
    log = f"{ready}.log"
    return (
        f"{{ {command} --ready {ready} >{log} 2>&1 & }}; pid=$!; "
        f"while [ ! -e {ready} ] && kill -0 $pid 2>/dev/null; do sleep 0.5; done; "
        f"[ -e {ready} ] || {{ cat {log}; exit 1; }}"
    )


def thp_heap_freed(quick: bool) -> Scenario:
    """A real runtime (Go 1.19, golang-go) builds a heap and frees all but 1/16 of it itself
    (a GC and its scavenger: madvise(MADV_DONTNEED) of the free runs between survivors). Under
    THP "always" the huge pages so freed in part stay allocated until split; what of the freed
    heap leaves the host within 30 s is the measure."""
    size = 768 * MIB if quick else 1024 * MIB
    # The guest idles after the free: the full run leaves WSL2's 2-minute idle window time to
    # complete and its reclaim to act (120 s ended with its window at 90 s).
    seconds = 45.0 if quick else 240.0
    heap = f"{W} runtime-heap {size} --release {HEAP_RELEASE} --report {HEAP_REPORT} --hold 100000"
    return Scenario(
        "thp-heap-freed",
        "a Go program builds a heap, frees 15/16 of it through its runtime, and stays alive",
        (
            # The program is compiled in the guest first (about 30 s under TCG).
            Phase("build", 5.0, _background_until_ready(heap, "/tmp/heap.ready"), wait=True),
            Phase(
                "free",
                seconds,
                f"touch {HEAP_RELEASE}; for i in $(seq 300); do "
                f"[ -e {HEAP_REPORT} ] && exit 0; sleep 0.2; done; cat /tmp/heap.ready.log; exit 1",
                wait=True,
            ),
        ),
        runtime_heap_bytes=size,
    )


def fragmented_free(quick: bool) -> Scenario:
    size = 512 * MIB if quick else 1024 * MIB
    seconds = 45.0 if quick else 90.0
    return Scenario(
        "fragmented-free",
        "memory freed in a pattern that leaves free memory in single pages",
        (
            Phase(
                "fragment",
                seconds,
                f"{W} fragment {size} --ready /tmp/fragmented --hold 100000 >/dev/null 2>&1 & "
                "while [ ! -e /tmp/fragmented ]; do sleep 0.2; done",
                wait=True,
            ),
        ),
        fragmented_bytes=size // 2,
    )


def pgbench(quick: bool, select_only: bool) -> Scenario:
    """A database whose tables, ten times its shared_buffers, live in the page cache, queried
    throughout, while another process writes a large set of files once and never reads them
    (a backup, a log shipper): reclaim should take the files and leave the tables."""
    database = Database(
        scale=5 if quick else 20,
        shared_buffers="32MB",
        clients=2,
        select_only=select_only,
        window_s=6.0 if quick else 30.0,
    )
    # The writer shares the one vCPU with pgbench: under --icount 2 it wrote 12 MiB per guest
    # second, 2.5 to 6 MiB per host second as the host's other load allowed. 384 MiB took 31
    # to 35 guest s (a phase of 150 host s held 51 to 62 guest s on a quiet host, and 768 MiB
    # did not fit); the report says how long the writer took, or that it did not finish.
    # Quick: 48 MiB take 4 to 5 guest s; 20 guest s leave room for pgbench's 6 s window after
    # the writer's start (a 96 MiB writer did not finish in 8 guest s, 50 s of a loaded host).
    # Full: issue 11 asks for 80 % of the cold files back "within 150 s"; the phase ends at 90
    # guest s, a stricter reading that costs less: pgbench alone ran at 0.17 guest s per host
    # second here, and a run at 150 guest s was still in this phase after 15 minutes. What was
    # back by 90 s was back within 150 s.
    cold = 48 * MIB if quick else 384 * MIB
    seconds = 20.0 if quick else 90.0
    # The host stops pgbench once the run ends (PGBENCH_STOP), on its clock; `--seconds` is
    # a safety net only, in guest seconds, which an instruction-counting clock makes longer.
    run = (
        f"{W} pgbench --clients {database.clients} {'--select-only ' if select_only else ''}"
        f"--log-prefix {PGBENCH_LOGS} --until {PGBENCH_STOP} --report {PGBENCH_REPORT} "
        f"--mark {COLD_MARK} --seconds {10 * seconds:.0f} >{PGBENCH_OUTPUT} 2>&1"
    )
    name = "pgbench-ro" if select_only else "pgbench-rw"
    kind = "read-only (-S)" if select_only else "read-write (TPC-B-like)"
    return Scenario(
        name,
        f"PostgreSQL 15 under pgbench, {kind}, tables in the page cache, plus a large file "
        "set written once",
        (
            # Transactions before the cold writer starts: the run's own baseline, on the
            # guest's clock too. 10 s of the host's were 1.5 to 2 guest s under --icount 2,
            # less than pgbench's wrapper takes to start (python3: about 3 s of the vCPU), so
            # that start, not the writer, opened the window of comparison.
            Phase("pgbench", 5.0 if quick else 10.0, run, guest_clock=True),
            Phase(
                "cold-write",
                seconds,
                f"touch {COLD_MARK} && {W} write-files /mnt/scratch/cold {cold} && "
                f"touch {COLD_DONE}",
                # The target's seconds are the user's, the guest's own; and the quick form lasts
                # as long as a loaded host needs for its writer, and no longer on a quiet one.
                guest_clock=True,
            ),
        ),
        cold_bytes=cold,
        setup=f"{W} database {DATABASE_DIR} --scale {database.scale} "
        f"--shared-buffers {database.shared_buffers}",
        database=database,
    )


def pgbench_read_only(quick: bool) -> Scenario:
    return pgbench(quick, select_only=True)


def pgbench_read_write(quick: bool) -> Scenario:
    return pgbench(quick, select_only=False)


SCENARIOS = {
    "build-then-idle": build_then_idle,
    "build-real": build_real,
    "busy-with-cold-cache": busy_with_cold_cache,
    "fragmented-free": fragmented_free,
    "busy-with-cold-cache-swap": busy_with_cold_cache_swap,
    "thp-heap-freed": thp_heap_freed,
    "pgbench-ro": pgbench_read_only,
    "pgbench-rw": pgbench_read_write,
}
