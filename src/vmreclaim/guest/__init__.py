"""The guest agent: runs inside a Linux VM and makes its unused memory go back to the host.

`observe` reads the kernel (procfs, sysfs, cgroupfs) into one immutable `Observation`;
`actions` writes the kernel's reclaim and compaction knobs; `status` and `oneshot` turn the two
into what the `vmreclaim guest` commands print. Standard library only, Python 3.9+: this package
must run in any guest with a stock python3 and `src/` on PYTHONPATH.
"""

from __future__ import annotations
