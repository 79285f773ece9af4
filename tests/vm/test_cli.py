"""`vmreclaim lab ...` as a user runs it, bad input included."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from vmreclaim import paths
from vmreclaim.lab.kernel import distribution_kernel


def vmreclaim(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vmreclaim", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


def test_lab_run_prints_the_output_and_exits_with_the_commands_code(guest_image) -> None:
    done = vmreclaim("lab", "run", "--memory", "1G", "--", "python3", "-c", "print(42)")
    assert (done.returncode, done.stdout) == (0, "42\n"), done.stderr


def test_lab_run_passes_stderr_and_a_failing_exit_code(guest_image) -> None:
    done = vmreclaim("lab", "run", "--memory", "512M", "--", "sh", "-c", "echo oops >&2; exit 7")
    assert (done.returncode, done.stdout) == (7, "")
    assert done.stderr.splitlines()[-1] == "oops"


def test_lab_build_twice_reuses_the_cache(guest_image) -> None:
    done = vmreclaim("lab", "build")
    assert done.returncode == 0, done.stderr
    assert str(guest_image.initramfs) in done.stdout
    assert "building" not in done.stderr


def test_a_bad_size_is_refused_with_a_hint() -> None:
    done = vmreclaim("lab", "run", "--memory", "12Q", "--", "true")
    assert done.returncode == 2
    assert "bad size '12Q'" in done.stderr
    assert "hint:" in done.stderr


def test_no_qemu_on_path_says_what_to_install(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path)}
    env.pop("VMRECLAIM_QEMU", None)
    done = vmreclaim("lab", "run", "--", "true", env=env)
    assert done.returncode == 3
    assert "QEMU is not installed" in done.stderr
    assert "apt-get install qemu-system-x86" in done.stderr


def test_a_missing_kernel_is_named(tmp_path: Path) -> None:
    done = vmreclaim(
        "lab",
        "run",
        "--kernel",
        str(tmp_path / "vmlinuz"),
        "--modules",
        str(tmp_path),
        "--",
        "true",
    )
    assert done.returncode == 2
    assert f"kernel {tmp_path / 'vmlinuz'} does not exist" in done.stderr


def test_a_kernel_that_does_not_boot_is_a_boot_error(tmp_path: Path, guest_image) -> None:
    bogus = tmp_path / "vmlinuz"
    bogus.write_bytes(b"this is not a kernel\n" * 1000)
    modules = distribution_kernel(paths.cache_dir()).modules_dir
    done = vmreclaim(
        "lab",
        "run",
        "--kernel",
        str(bogus),
        "--modules",
        str(modules),
        "--accel",
        "tcg",
        "--",
        "true",
    )
    assert done.returncode == 1
    assert "QEMU exited" in done.stderr
    assert "too old to load a ram disk" in done.stderr  # what QEMU said comes through


def test_lab_shell_gives_a_shell_on_the_console_and_exit_powers_off(guest_image) -> None:
    shell = subprocess.Popen(
        [sys.executable, "-m", "vmreclaim", "lab", "shell", "--memory", "512M"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert shell.stdin is not None
    assert shell.stdout is not None
    seen = b""
    try:
        os.set_blocking(shell.stdout.fileno(), False)

        def read_until(marker: bytes, seconds: float) -> bool:
            nonlocal seen
            deadline = time.monotonic() + seconds
            while marker not in seen and time.monotonic() < deadline:
                seen += shell.stdout.read() or b""  # type: ignore[union-attr]
                time.sleep(0.1)
            return marker in seen

        assert read_until(b"/ # ", 120), seen[-2000:]
        shell.stdin.write(b"echo shell-$((6 * 7))\n")
        shell.stdin.flush()
        assert read_until(b"shell-42", 30), seen[-2000:]
        shell.stdin.write(b"exit\n")
        shell.stdin.flush()
        assert shell.wait(timeout=60) == 0
    finally:
        if shell.poll() is None:
            shell.kill()
            shell.wait()
