"""The QEMU command line of a lab guest, and the choice of accelerator."""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vmreclaim.agent_protocol import PORT_NAME
from vmreclaim.errors import MissingDependencyError, UsageError
from vmreclaim.guest.observe.memory import parse_meminfo
from vmreclaim.units import format_size

log = logging.getLogger(__name__)

MIB = 1 << 20
COMMAND_PORT = "org.vmreclaim.cmd"
BALLOON_ID = "balloon0"
ACCELERATORS = ("auto", "kvm", "tcg")


INITS = ("busybox", "systemd")


@dataclass(frozen=True)
class MachineConfig:
    """How to boot a lab guest. Amounts are bytes."""

    memory: int = 2048 * MIB
    cpus: int = 2
    free_page_reporting: bool = True
    deflate_on_oom: bool = False
    scratch_disk: int | None = None
    """Size of an ext4 disk mounted at /mnt/scratch in the guest, for page-cache workloads."""
    scratch_contents: Path | None = None
    """A host directory whose files the scratch disk holds from the start (mke2fs -d): the
    guest gets these and nothing more of the host, e.g. a source tarball to build."""
    append: str = ""
    """Extra kernel command line, e.g. "page_reporting.page_reporting_order=5"."""
    accel: str = "auto"
    boot_timeout: float = 180.0
    shell: bool = False
    """Put the guest's serial console (a shell) on this terminal."""
    icount: int | None = None
    """TCG only: the guest's clock advances 2**icount ns per instruction (QEMU's -icount), so
    CPU time measured inside the guest counts instructions, not how slowly TCG emulates them.
    0 is a 1 GHz CPU retiring one instruction per cycle, slower than any host KVM would use."""
    init: str = "busybox"
    """PID 1: "busybox" (the lab's own init, a boot in seconds) or "systemd" (the host's
    systemd over a root on tmpfs, to start the project's units as a real system would)."""
    name: str = "vmreclaim-lab"
    """The guest's name (QEMU's -name guest=), as `host run` and `top` show it."""
    agent_port: bool = False
    """Give the guest the agent's virtio-serial port (agent_protocol.PORT_NAME), its host end
    a unix socket QEMU listens on (RunFiles.agent_socket), as `host launch-options` says."""

    def validate(self) -> None:
        if self.memory < 128 * MIB:
            raise UsageError(
                f"guest memory {self.memory} bytes is too small", hint="use 128M or more"
            )
        if self.cpus < 1:
            raise UsageError("a guest needs at least one vCPU")
        if self.scratch_disk is not None and self.scratch_disk < 16 * MIB:
            raise UsageError("the scratch disk must be at least 16M (ext4 needs room)")
        if self.scratch_contents is not None:
            if self.scratch_disk is None:
                raise UsageError(
                    "scratch contents need a scratch disk", hint="give the disk a size too"
                )
            if not self.scratch_contents.is_dir():
                raise UsageError(f"{self.scratch_contents} is not a directory")
        if self.init not in INITS:
            raise UsageError(f"unknown init {self.init!r}", hint="use busybox or systemd")
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", self.name):
            raise UsageError(
                f"guest name {self.name!r} is not usable", hint="use letters, digits, . _ -"
            )
        self._validate_accel()

    def _validate_accel(self) -> None:
        if self.accel not in ACCELERATORS:
            raise UsageError(f"unknown accelerator {self.accel!r}", hint="use auto, kvm or tcg")
        if self.icount is not None:
            if self.accel == "kvm":
                raise UsageError("instruction counting needs TCG", hint="use --accel tcg")
            if not 0 <= self.icount <= 10:
                raise UsageError(f"icount shift {self.icount} is out of range", hint="use 0-10")
            if self.cpus != 1:
                # Seen here: with -smp 2 the guest hangs bringing up its second CPU.
                raise UsageError("instruction counting needs a single vCPU", hint="use 1 vCPU")


def check_fits_host(memory: int, meminfo: Path = Path("/proc/meminfo")) -> None:
    """Refuse guest RAM the host could never back (more than its RAM and swap): QEMU would
    only say "cannot set up guest memory 'pc.ram'" after the boot began. Unreadable meminfo
    says nothing, and the boot goes on."""
    try:
        host = parse_meminfo(meminfo.read_text(encoding="ascii", errors="replace"))
    except OSError:
        return
    if host.total_bytes is None:
        return
    total = host.total_bytes + (host.swap_total_bytes or 0)
    if memory > total:
        raise UsageError(
            f"a guest of {format_size(memory)} cannot fit this host: it has "
            f"{format_size(total)} of RAM and swap",
            hint="give the guest less memory, e.g. --memory 2G",
        )


@dataclass(frozen=True)
class RunFiles:
    """Where one running guest keeps its sockets and logs."""

    directory: Path

    @property
    def command_socket(self) -> Path:
        return self.directory / "command.sock"

    @property
    def lab_qmp_socket(self) -> Path:
        return self.directory / "qmp-lab.sock"

    @property
    def qmp_socket(self) -> Path:
        """A second monitor, left free for other tools (`vmreclaim top --qmp ...`)."""
        return self.directory / "qmp.sock"

    @property
    def agent_socket(self) -> Path:
        """The host end of the agent's channel: the stem of `qmp_socket`, so that `host run`'s
        `agent` globs pair the two."""
        return self.directory / "qmp.agent"

    @property
    def console_log(self) -> Path:
        return self.directory / "console.log"

    @property
    def qemu_log(self) -> Path:
        return self.directory / "qemu.log"

    @property
    def scratch_image(self) -> Path:
        return self.directory / "scratch.img"


def find_qemu() -> Path:
    if platform.machine() not in ("x86_64", "AMD64"):
        raise MissingDependencyError(
            f"the lab boots x86-64 guests and this host is {platform.machine()}"
        )
    found = os.environ.get("VMRECLAIM_QEMU") or shutil.which("qemu-system-x86_64")
    if not found:
        raise MissingDependencyError(
            "QEMU is not installed (no qemu-system-x86_64 on PATH)",
            hint="apt-get install qemu-system-x86 (scripts/setup does)",
        )
    return Path(found)


def kernel_command_line(config: MachineConfig) -> str:
    # panic=-1 with -no-reboot: a guest that panics ends QEMU at once instead of hanging.
    base = ["console=ttyS0", "panic=-1", "8250.nr_uarts=1"]
    base += ["quiet", "vmreclaim.shell=1"] if config.shell else []
    base += ["vmreclaim.init=systemd"] if config.init == "systemd" else []
    return " ".join([*base, config.append]).strip()


def qemu_argv(
    *,
    qemu: Path,
    kernel: Path,
    initramfs: Path,
    package_dir: Path,
    config: MachineConfig,
    accel: str,
    files: RunFiles,
) -> list[str]:
    balloon = (
        f"virtio-balloon-pci,id={BALLOON_ID}"
        f",free-page-reporting={'on' if config.free_page_reporting else 'off'}"
        f",deflate-on-oom={'on' if config.deflate_on_oom else 'off'}"
    )
    console = (
        ["-chardev", "stdio,id=console,signal=off", "-serial", "chardev:console"]
        if config.shell
        else ["-serial", f"file:{files.console_log}"]
    )
    # fmt: off
    argv = [
        str(qemu),
        "-name", f"{config.name},process=vmreclaim-lab",
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-machine", "q35", "-accel", accel,
        # -cpu host aborts under nested KVM here ("failed to set MSR 0x10a"); max works on both.
        "-cpu", "max",
        "-m", f"{config.memory // MIB}M", "-smp", str(config.cpus),
        "-kernel", str(kernel), "-initrd", str(initramfs),
        "-append", kernel_command_line(config),
        *console,
        "-device", balloon,
        "-device", "virtio-serial-pci,id=serial0",
        # QEMU connects to our socket at start-up (server=off), so the guest's greeting can
        # never be written before anyone listens.
        "-chardev", f"socket,id=command,path={files.command_socket},server=off",
        "-device", f"virtserialport,bus=serial0.0,chardev=command,name={COMMAND_PORT}",
        # Read-only 9p shares: the host's /usr (python3 and its libraries; Debian has merged
        # /usr) and vmreclaim's own package. Nothing else of the host is visible in the guest.
        "-fsdev", "local,id=usr,path=/usr,security_model=none,readonly=on",
        "-device", "virtio-9p-pci,fsdev=usr,mount_tag=usr",
        "-fsdev", f"local,id=vmreclaim,path={package_dir},security_model=none,readonly=on",
        "-device", "virtio-9p-pci,fsdev=vmreclaim,mount_tag=vmreclaim",
        "-qmp", f"unix:{files.lab_qmp_socket},server=on,wait=off",
        "-qmp", f"unix:{files.qmp_socket},server=on,wait=off",
    ]
    # fmt: on
    if config.agent_port:
        argv += [
            "-chardev",
            f"socket,id=agent,path={files.agent_socket},server=on,wait=off",
            "-device",
            f"virtserialport,bus=serial0.0,chardev=agent,name={PORT_NAME}",
        ]
    if config.icount is not None:
        # sleep=on: while the guest idles its clock follows the host's, as without icount.
        argv += ["-icount", f"shift={config.icount},sleep=on"]
    if config.scratch_disk is not None:
        argv += [
            "-drive",
            f"file={files.scratch_image},if=none,id=scratch,format=raw,cache=unsafe",
            "-device",
            "virtio-blk-pci,drive=scratch",
        ]
    return argv


def kvm_usable() -> bool:
    return os.access("/dev/kvm", os.R_OK | os.W_OK)


def choose_accelerator(
    requested: str, probe_key: str, cache: Path, probe: Callable[[], bool]
) -> str:
    """ "kvm" or "tcg". For "auto": KVM only where a probe guest really boots under it, since
    nested KVM here opens fine and then hangs the guest; the verdict is cached per host kernel,
    QEMU and guest image."""
    if requested != "auto":
        if requested == "kvm" and not kvm_usable():
            raise MissingDependencyError(
                "/dev/kvm is missing or not accessible", hint="use --accel tcg or auto"
            )
        return requested
    if not kvm_usable():
        return "tcg"
    verdicts_file = cache / "accelerator.json"
    try:
        verdicts: dict[str, str] = json.loads(verdicts_file.read_text())
    except (OSError, ValueError):
        verdicts = {}
    if probe_key not in verdicts:
        log.info("probing whether KVM boots a guest here (once; the verdict is cached)")
        verdicts[probe_key] = "kvm" if probe() else "tcg"
        verdicts_file.parent.mkdir(parents=True, exist_ok=True)
        verdicts_file.write_text(json.dumps(verdicts, indent=2) + "\n")
        if verdicts[probe_key] == "tcg":
            log.info("KVM did not boot the probe guest: using TCG (software emulation)")
    return verdicts[probe_key]
