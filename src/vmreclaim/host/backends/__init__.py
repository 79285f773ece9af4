"""The hypervisor backends: one `VmBackend` per VM, all built on `base.Backend`.

  base.py              the `VmBackend` protocol and the `Backend` base: state, footprint,
                       statistics mapping, the time bound on every call
  process.py           the VMM process: its pid from a socket's peer, its footprint from /proc
  qemu.py              QEMU over QMP (the official qemu.qmp library, asyncio)
  libvirt.py           libvirt domains through libvirt-python (optional extra `libvirt`)
  vmm_http.py          JSON over HTTP on a unix socket, shared by the two REST VMMs
  cloud_hypervisor.py, firecracker.py   those two VMMs

No backend imports another's module. Hypervisor libraries (qemu.qmp, libvirt) are imported only
by the module that needs them, and this package's __init__ imports nothing, so the guest side
and the other backends never load them.
"""
