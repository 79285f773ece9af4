"""The host side: watch every VM's real footprint (`vmreclaim top`) and steer balloons
(`vmreclaim host run`).

Layout, I/O at the edges and pure logic in the middle:

  records.py        immutable records that cross module boundaries (bytes everywhere)
  backends/         one `VmBackend` per hypervisor (QEMU, libvirt, Cloud Hypervisor,
                    Firecracker) on one base; see its __init__
  sources.py        what the user named (sockets, URIs) -> addresses -> backends
  launch.py         pure: the options that turn free page reporting on, per hypervisor
  hostmem.py        the host's MemAvailable and memory PSI, from a /proc root
  history.py        pure: returned-so-far, the trend and the guest statistics' age of each VM
  fleet.py          many VMs: discovery by glob, reconnect with back-off, forgetting
  policy.py         pure: decide(observation, config, state) -> decision
  config.py         the TOML configuration, validated
  daemon.py         `vmreclaim host run`: the control loop, its stop
  metrics.py        Prometheus exposition
  view.py           the daemon's view for `top` on an owner-only unix socket
  top.py            `vmreclaim top`: rich live view and --once --json
  top_view.py       `vmreclaim top` beside a daemon: its published view

Host-side libraries (qemu.qmp, rich, prometheus_client, libvirt) are imported lazily, inside
the modules that need them, so `vmreclaim guest ...` never loads them.
"""
