"""What to give each hypervisor so that a VM returns freed memory: free page reporting on the
balloon (it is off by default everywhere and fixed when the VM starts), guest statistics on,
and the control socket vmreclaim talks to. Pure: text in, text out (`vmreclaim host
launch-options`).

Sources: QEMU's virtio-balloon properties (`free-page-reporting`, `deflate-on-oom`,
`guest-stats-polling-interval`); libvirt's domain XML (`<memballoon freePageReporting>`, libvirt
6.9.0+; `<stats period>`); Cloud Hypervisor's `--balloon` (docs/balloon.md and BalloonConfig in
its OpenAPI document); Firecracker's `PUT /balloon` (Balloon in firecracker.yaml;
`free_page_reporting` since 1.14, accepted only before InstanceStart).

The guest agent's channel (agent_protocol.PORT_NAME) is a virtio-serial port whose host end
is a unix socket QEMU listens on (`server=on,wait=off`: the VM starts whether or not anyone
connects, and `host run` connects when it comes). Cloud Hypervisor and Firecracker have no
virtio-serial ports for this; their guest channel is vsock, over a unix socket on the host
(`--vsock cid=3,socket=PATH`; Firecracker's `PUT /vsock` with `guest_cid` and `uds_path`,
pre-boot only): the agent connects to the host's port VSOCK_PORT and the VMM carries that to
`PATH_VSOCK_PORT`, where `host run` listens (`agent_vsock`; both VMMs' docs/vsock.md). CID 3
is the lowest a guest may have (0-2 are the hypervisor, loopback and host); with hybrid vsock
the VMM, not the host kernel, handles it, so every VM may have 3.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from vmreclaim.agent_protocol import PORT_NAME, VSOCK_PORT
from vmreclaim.errors import UsageError

HYPERVISORS = ("qemu", "libvirt", "cloud-hypervisor", "firecracker")
DEFLATE_ON_OOM = True
"""deflate-on-oom on by default: measured with `python -m vmreclaim.bench.bursts --repeat 3`
(README, "Bursts"). Without it the balloon driver takes inflated pages out of the guest's
MemTotal, and the kernel refused a 700 MB allocation outright in a squeezed 1.5 GiB guest
(3 of 3); with it, the guest takes pages back on the verge of OOM and the allocation
completed (3 of 3, no OOM kill). The price: a guest can grow past the host's target, which
`host run` sees at its next poll and answers by deflating that guest whole."""

_GUEST_NOTE = (
    "The guest needs Linux 5.7+ with CONFIG_PAGE_REPORTING and the virtio_balloon driver "
    "(`vmreclaim guest status` in the guest says whether reporting was negotiated). Only free "
    "blocks of 2 MiB and more go back by default (page_reporting.page_reporting_order=9)."
)


@dataclass(frozen=True)
class LaunchOptions:
    hypervisor: str
    snippet: str
    """What to paste: command-line options, an XML element, or a request."""
    note: str
    """Where it goes and what to know, for a human."""
    channel: str = ""
    """What to add for the guest agent's channel to `host run`; "" where there is none."""

    def text(self) -> str:
        """What `host launch-options` prints: options on one line, XML elements and requests
        one a line."""
        if not self.channel:
            return self.snippet
        separator = "\n" if self.snippet.startswith(("<", "curl ")) else " "
        return f"{self.snippet}{separator}{self.channel}"


def _on(flag: bool) -> str:
    return "on" if flag else "off"


def launch_options(
    hypervisor: str,
    *,
    name: str = "vm1",
    deflate_on_oom: bool = DEFLATE_ON_OOM,
    stats_interval: int = 1,
) -> LaunchOptions:
    """The options that turn free page reporting on for `hypervisor`, for a VM called
    `name` (used in socket paths)."""
    if stats_interval < 0:
        raise UsageError("the statistics interval is 0 (off) or more seconds")
    channel = ""
    agent = f"/run/vms/{name}.agent"
    channel_note = (
        f"The virtio-serial port {PORT_NAME} is the guest agent's channel to `vmreclaim host "
        f"run`: in the guest, `vmreclaim guest run` finds it and reports every tick; on the "
        f'host, agent = ["/run/vms/*.agent"] in host.toml reads {agent} for '
        + (
            f"the domain named {name}."
            if hypervisor == "libvirt"
            else f"the VM whose QMP socket is /run/vms/{name}.qmp (the same stem)."
        )
    )
    vsock = f"/run/vms/{name}.vsock"
    vsock_note = (
        f"The vsock device is the guest agent's channel to `vmreclaim host run`: in the guest, "
        f"`vmreclaim guest run` connects to the host's vsock port {VSOCK_PORT}, which the VMM "
        f'carries to {vsock}_{VSOCK_PORT}; on the host, agent_vsock = ["/run/vms/*.vsock"] in '
        f"host.toml listens there for the VM whose API socket is /run/vms/{name}.sock (the same "
        "stem). The guest needs CONFIG_VIRTIO_VSOCKETS."
    )
    if hypervisor == "qemu":
        snippet = (
            f"-device virtio-balloon-pci,id=balloon0,free-page-reporting=on,"
            f"deflate-on-oom={_on(deflate_on_oom)} "
            f"-qmp unix:/run/vms/{name}.qmp,server=on,wait=off"
        )
        note = (
            "Add these to QEMU's command line (free-page-reporting is off by default). "
            "vmreclaim turns guest statistics on itself over QMP (guest-stats-polling-interval); "
            f"watch it with `vmreclaim top --qmp /run/vms/{name}.qmp`. {channel_note} A VM that "
            "already has a virtio-serial-pci controller can put the port on its bus instead."
        )
        channel = (
            "-device virtio-serial-pci,id=vmreclaim-serial "
            f"-chardev socket,id=vmreclaim-agent,path={agent},server=on,wait=off "
            "-device virtserialport,bus=vmreclaim-serial.0,chardev=vmreclaim-agent,"
            f"name={PORT_NAME}"
        )
    elif hypervisor == "libvirt":
        autodeflate = " autodeflate='on'" if deflate_on_oom else ""
        stats = f"\n  <stats period='{stats_interval}'/>\n" if stats_interval else ""
        snippet = (
            f"<memballoon model='virtio'{autodeflate} freePageReporting='on'>{stats}</memballoon>"
        )
        note = (
            "Put this element in the domain's <devices> (libvirt 6.9.0 or newer), replacing any "
            "other <memballoon>; for a defined domain `vmreclaim host libvirt enable-reporting "
            f"{name} --agent-channel {agent}` puts both in its persistent XML. It applies from "
            "the domain's next start. Watch with "
            "`vmreclaim top --libvirt qemu:///system`. Put the <channel> element in <devices> "
            f"too (libvirt adds the virtio-serial controller itself). {channel_note}"
        )
        channel = (
            f"<channel type='unix'><source mode='bind' path='{agent}'/>"
            f"<target type='virtio' name='{PORT_NAME}'/></channel>"
        )
    elif hypervisor == "cloud-hypervisor":
        snippet = (
            f"--balloon size=0,deflate_on_oom={_on(deflate_on_oom)},free_page_reporting=on "
            f"--api-socket path=/run/vms/{name}.sock"
        )
        note = (
            "Add these to cloud-hypervisor's command line (or set BalloonConfig "
            "free_page_reporting=true in PUT /api/v1/vm.create). Watch with `vmreclaim top "
            f"--cloud-hypervisor /run/vms/{name}.sock`. {vsock_note}"
        )
        channel = f"--vsock cid=3,socket={vsock}"
    elif hypervisor == "firecracker":
        body = {
            "amount_mib": 0,
            "deflate_on_oom": deflate_on_oom,
            "stats_polling_interval_s": stats_interval,
            "free_page_reporting": True,
        }
        snippet = (
            f"curl --unix-socket /run/vms/{name}.sock -X PUT http://localhost/balloon "
            f"-H 'Content-Type: application/json' -d '{json.dumps(body)}'"
        )
        note = (
            "Send these requests before InstanceStart: Firecracker (1.14 or newer for "
            "free_page_reporting) refuses PUT /balloon after boot, statistics cannot be turned "
            "on later either, and PUT /vsock is pre-boot only too. Watch with `vmreclaim top "
            f"--firecracker /run/vms/{name}.sock`. {vsock_note}"
        )
        channel = (
            f"curl --unix-socket /run/vms/{name}.sock -X PUT http://localhost/vsock "
            f"-H 'Content-Type: application/json' "
            f"-d '{json.dumps({'guest_cid': 3, 'uds_path': vsock})}'"
        )
    else:
        raise UsageError(
            f"unknown hypervisor {hypervisor!r}", hint=f"one of {', '.join(HYPERVISORS)}"
        )
    return LaunchOptions(hypervisor, snippet, f"{note}\n{_GUEST_NOTE}", channel)
