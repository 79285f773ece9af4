"""`VirtualMachine`: a lab guest whose QEMU process lives exactly as long as a `with` block.

QEMU runs in its own process group with a parent-death signal, and `stop()` kills the group:
on success, on exceptions, on Ctrl-C and on SIGTERM (the CLI turns it into SystemExit), nothing
is left running. Even a SIGKILL of the Python process takes QEMU down, through the death signal.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import termios
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import vmreclaim
from vmreclaim import paths
from vmreclaim.errors import BootError, ChannelError, MissingDependencyError, VmreclaimError
from vmreclaim.lab.channel import CommandChannel, CommandResult
from vmreclaim.lab.image import GuestImage, build_image
from vmreclaim.lab.qemu_command import (
    MIB,
    MachineConfig,
    RunFiles,
    check_fits_host,
    choose_accelerator,
    find_qemu,
    qemu_argv,
)
from vmreclaim.qemu.footprint import Footprint, ProcessFootprint
from vmreclaim.qemu.process import set_parent_death_signal
from vmreclaim.qemu.qmp import QmpSession

log = logging.getLogger(__name__)

# How long a KVM probe guest may take to come up before KVM is called unusable. A KVM guest
# boots in about a second; a TCG one in about 5 s here, and the nested-KVM hang never ends.
_KVM_PROBE_SECONDS = 20.0


def _make_scratch_disk(path: Path, size: int, contents: Path | None = None) -> None:
    """An ext4 image of `size` bytes at `path`, holding the files of `contents` if given."""
    mkfs = shutil.which("mkfs.ext4") or "/sbin/mkfs.ext4"
    if not Path(mkfs).exists():
        raise MissingDependencyError(
            "mkfs.ext4 is not installed", hint="apt-get install e2fsprogs (scripts/setup does)"
        )
    with path.open("wb") as disk:
        disk.truncate(size)
    populate = [] if contents is None else ["-d", str(contents)]
    done = subprocess.run(
        [mkfs, "-q", "-F", "-E", "lazy_itable_init=1,nodiscard", *populate, str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise BootError(f"mkfs.ext4 failed: {done.stderr.strip()}")


# The guest's python3: the lab guest runs the host's /usr, shared over 9p.
GUEST_PYTHON = Path("/usr/bin/python3")


def compile_for_guest(package_dir: Path, python: Path = GUEST_PYTHON) -> bool:
    """Write the package's bytecode beside its sources with the guest's own interpreter.

    The share is read-only and the guest runs with PYTHONDONTWRITEBYTECODE, so its python3
    compiled every module at each start and kept nothing: under --icount 2,
    `python3 -m vmreclaim guest run --help` took 2.87 s of the vCPU so, and 2.01 s with this
    bytecode (docs/benchmarks/one-off/guest_python_start.py). Python checks each .pyc against
    its source's mtime and size, so one made stale by an edit is ignored. Returns whether it
    worked: a tree the host cannot write (an installed package) only costs speed."""
    if not python.exists():
        return False
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPYCACHEPREFIX"}
    try:
        done = subprocess.run(
            [str(python), "-m", "compileall", "-q", str(package_dir)],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        log.debug("could not compile %s for the guest: %s", package_dir, err)
        return False
    if done.returncode != 0:
        log.debug("could not compile %s for the guest: %s", package_dir, done.stdout[-500:])
        return False
    return True


class VirtualMachine:
    """A real Linux guest under QEMU. Use it as a context manager:

    with VirtualMachine(MachineConfig(memory=1 << 30)) as vm:
        print(vm.run("uname -r").text)
    """

    def __init__(
        self, config: MachineConfig | None = None, image: GuestImage | None = None
    ) -> None:
        self.config = config or MachineConfig()
        self._image = image
        self._process: subprocess.Popen[bytes] | None = None
        self._files: RunFiles | None = None
        self._channel: CommandChannel | None = None
        self._qmp: QmpSession | None = None
        self._footprint: ProcessFootprint | None = None
        self._saved_tty: list[Any] | None = None
        self.accel: str | None = None
        self.release: str | None = None
        self.boot_seconds: float | None = None

    # -- life cycle -------------------------------------------------------------------------

    def __enter__(self) -> VirtualMachine:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        self.config.validate()
        check_fits_host(self.config.memory)
        qemu = find_qemu()
        image = self._image or build_image()
        self._image = image
        accel = self._choose_accelerator(qemu, image)
        try:
            self._boot(qemu, image, accel, self.config.boot_timeout)
        except BaseException:
            self.stop()
            raise

    def _choose_accelerator(self, qemu: Path, image: GuestImage) -> str:
        if self.config.icount is not None:
            return "tcg"  # validate() refused kvm; counting instructions is TCG's alone
        stat = qemu.stat()
        key = f"{platform.release()}|{qemu}|{stat.st_size}|{stat.st_mtime_ns}|{image.key}"

        def probe() -> bool:
            config = MachineConfig(memory=256 * MIB, cpus=1, accel="kvm")
            trial = VirtualMachine(config, image)
            try:
                trial._boot(qemu, image, "kvm", _KVM_PROBE_SECONDS)
                return trial.run("true", timeout=10).ok
            except VmreclaimError as err:
                log.debug("KVM probe failed: %s", err)
                return False
            finally:
                trial.stop()

        return choose_accelerator(self.config.accel, key, paths.cache_dir(), probe)

    def _boot(self, qemu: Path, image: GuestImage, accel: str, boot_timeout: float) -> None:
        started = time.monotonic()
        files = RunFiles(Path(tempfile.mkdtemp(prefix="vmreclaim-vm-")))
        self._files = files
        if self.config.scratch_disk is not None:
            _make_scratch_disk(
                files.scratch_image, self.config.scratch_disk, self.config.scratch_contents
            )
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(files.command_socket))
            listener.listen(1)
            package_dir = Path(vmreclaim.__file__).resolve().parent
            compile_for_guest(package_dir)
            argv = qemu_argv(
                qemu=qemu,
                kernel=image.kernel,
                initramfs=image.initramfs,
                package_dir=package_dir,
                config=self.config,
                accel=accel,
                files=files,
            )
            log.debug("starting %s", shlex.join(argv))
            if self.config.shell and os.isatty(0):
                self._saved_tty = termios.tcgetattr(0)
            with files.qemu_log.open("wb") as qemu_log:
                self._process = subprocess.Popen(
                    argv,
                    stdin=None if self.config.shell else subprocess.DEVNULL,
                    stdout=None if self.config.shell else subprocess.DEVNULL,
                    stderr=qemu_log,
                    start_new_session=True,
                    preexec_fn=set_parent_death_signal,  # noqa: PLW1509 - prctl must run in the child
                )
            self._channel = CommandChannel(self._accept(listener, deadline=started + 30))
        finally:
            listener.close()
        try:
            self.release = self._channel.wait_ready(boot_timeout)
        except ChannelError as err:
            try:
                # A guest that hung up may be a QEMU on its way out: give it a moment to say so.
                status: int | None = self._process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                status = None
            why = f"QEMU exited with status {status}" if status is not None else err.message
            raise BootError(
                f"the guest did not come up under {accel}: {why}\n{self._diagnostics()}",
                hint="read the console output above; `vmreclaim lab build --force` rebuilds",
            ) from err
        self._qmp = self._connect_qmp(files.lab_qmp_socket, deadline=time.monotonic() + 10)
        self._footprint = ProcessFootprint(self._process.pid, self.config.memory)
        self.accel = accel
        self.boot_seconds = time.monotonic() - started
        log.info(
            "guest up in %.1f s under %s (kernel %s, %d MiB, %d vCPU, free page reporting %s)",
            self.boot_seconds,
            accel,
            self.release,
            self.config.memory // MIB,
            self.config.cpus,
            "on" if self.config.free_page_reporting else "off",
        )

    def _accept(self, listener: socket.socket, deadline: float) -> socket.socket:
        """QEMU connects to the command socket as it starts; if it exits first, say why."""
        listener.settimeout(0.2)
        while time.monotonic() < deadline:
            try:
                connection, _ = listener.accept()
                connection.settimeout(None)
                return connection
            except socket.timeout:
                if self._process is not None and self._process.poll() is not None:
                    raise BootError(f"QEMU exited at start-up.\n{self._diagnostics()}") from None
        raise BootError(f"QEMU did not start within 30 s.\n{self._diagnostics()}")

    def _connect_qmp(self, path: Path, deadline: float) -> QmpSession:
        while True:
            try:
                return QmpSession(path, name="vmreclaim-lab")
            except VmreclaimError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        """Stop QEMU (politely over QMP, then by SIGKILL) and remove the run directory."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        process = self._process
        asked_to_quit = False
        if self._qmp is not None:
            if process is not None and process.poll() is None:
                with contextlib.suppress(VmreclaimError):
                    self._qmp.execute("quit", timeout=3)
                    asked_to_quit = True
            self._qmp.close()
            self._qmp = None
        if process is not None:
            if asked_to_quit:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=3)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            self._process = None
        if self._saved_tty is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, self._saved_tty)
            self._saved_tty = None
        if self._files is not None:
            shutil.rmtree(self._files.directory, ignore_errors=True)
            self._files = None

    # -- using the guest --------------------------------------------------------------------

    @property
    def pid(self) -> int:
        return self._running().pid

    @property
    def qmp(self) -> QmpSession:
        """The lab's own QMP connection."""
        if self._qmp is None:
            raise ChannelError("the guest is not running")
        return self._qmp

    @property
    def qmp_socket(self) -> Path:
        """A free QMP monitor for other tools."""
        if self._files is None:
            raise ChannelError("the guest is not running")
        return self._files.qmp_socket

    @property
    def agent_socket(self) -> Path:
        """The host end of the agent's channel (MachineConfig.agent_port)."""
        if self._files is None or not self.config.agent_port:
            raise ChannelError("the guest is not running with an agent port")
        return self._files.agent_socket

    def _running(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise ChannelError("the guest is not running")
        return self._process

    def run(self, command: str | Sequence[str], timeout: float = 120.0) -> CommandResult:
        """Run a shell script (str) or an argv (sequence) in the guest as root, in /root."""
        if self._channel is None:
            raise ChannelError("the guest is not running")
        script = command if isinstance(command, str) else shlex.join(command)
        try:
            return self._channel.run(script, timeout)
        except ChannelError as err:
            if self._running().poll() is not None:
                raise ChannelError(
                    f"QEMU exited while a command ran.\n{self._diagnostics()}"
                ) from err
            raise

    def check(self, command: str | Sequence[str], timeout: float = 120.0) -> CommandResult:
        """Like `run`, but a non-zero exit raises, with the command's stderr in the message."""
        result = self.run(command, timeout)
        if not result.ok:
            raise ChannelError(
                f"guest command failed with exit code {result.exit_code}: {command!r}\n"
                f"{result.stderr.decode(errors='replace')[-2000:]}"
            )
        return result

    def footprint(self) -> Footprint:
        """The QEMU process's memory on the host right now."""
        if self._footprint is None:
            raise ChannelError("the guest is not running")
        return self._footprint.sample()

    def wait_for_exit(self) -> int:
        """Wait until QEMU exits by itself (the guest powered off); its exit status."""
        return self._running().wait()

    def console_output(self) -> str:
        if self._files is None or not self._files.console_log.exists():
            return ""
        return self._files.console_log.read_text(errors="replace")

    def _diagnostics(self, lines: int = 25) -> str:
        parts = []
        if self._files is not None and self._files.qemu_log.exists():
            qemu_text = self._files.qemu_log.read_text(errors="replace").strip()
            if qemu_text:
                parts.append("QEMU said:\n" + qemu_text[-3000:])
        console = self.console_output().strip().splitlines()[-lines:]
        if console:
            parts.append("last lines of the guest console:\n" + "\n".join(console))
        return "\n".join(parts) or "(QEMU and the guest console said nothing)"
