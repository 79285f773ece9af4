"""The README's first command, in its quick form."""

from __future__ import annotations

import re
import subprocess
import sys


def test_quick_demo_shows_memory_leaving_the_guest(guest_image, tmp_path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "vmreclaim", "demo", "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    rows = dict(re.findall(r"^  (\S.*?)\s{2,}([\d.]+) MiB$", done.stdout, re.MULTILINE))
    held = float(rows["holding 512.0 MiB"])
    freed = float(rows["after the process exited"])
    cached = float(rows["with 384.0 MiB of page cache"])
    dropped = float(rows["after the vmreclaim agent ran"])
    assert held - freed >= 0.8 * 512
    # The agent keeps 128 MiB of reclaimable cache (WSL2's floor), partly this cache.
    assert cached - dropped >= 0.6 * 384
    # What the agent did, in its own words: it dropped or reclaimed the cache.
    said = done.stdout.partition("what the agent said")[2]
    action = re.compile(r"^   vmreclaim: (reclaim|drop-behind|compact)", re.MULTILINE)
    assert action.search(said), done.stdout
    assert (tmp_path / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
