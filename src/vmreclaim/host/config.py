"""The host side's configuration: one TOML file, validated into frozen records.

Every problem names the file, the key and what is allowed. Sizes are strings with binary
suffixes ("512M", "2G") or plain byte counts. An example with every key and its default:

    qmp = ["/run/vms/*.qmp"]          # QMP sockets, or globs matched again every cycle
    libvirt = ["qemu:///system"]      # libvirt URIs: every running domain on each
    cloud_hypervisor = []             # Cloud Hypervisor API sockets (--api-socket), or globs
    firecracker = []                  # Firecracker API sockets (--api-sock), or globs
                                      # none of the four: every VM found on the host
                                      # (discovery.py)
    agent = ["/run/vms/*.agent"]      # guest agents' channels: the unix sockets of each VM's
                                      # virtio-serial port org.vmreclaim.agent.0, or globs; a
                                      # socket goes with the VM whose socket (or libvirt
                                      # domain) has the same stem: db.agent with db.qmp
    agent_vsock = ["/run/vms/*.vsock"]  # guest agents over vsock (Cloud Hypervisor,
                                      # Firecracker): each VM's vsock socket (--vsock
                                      # socket=, PUT /vsock uds_path), or globs; the daemon
                                      # listens at PATH_30317 for the agent, which goes with
                                      # the VM of the same stem: db.vsock with db.sock
    interval = 1.0                    # seconds between polls
    timeout = 0.5                     # seconds a hypervisor has to answer one call; a VM
                                      # that does not is reported hung (default: half the
                                      # interval, at most 5)
    stale_after = 3                   # guest statistics older than this many intervals (or
                                      # statistics periods, if longer) are stale: the VM is
                                      # neither shrunk nor judged in need until they resume
    socket = "/run/vmreclaim-host/host.sock"  # the daemon's view for `top` (owner-only):
                                      # the default for root, else
                                      # $XDG_RUNTIME_DIR/vmreclaim/host.sock; "" for none
    keep_balloons = false             # on SIGTERM/SIGINT, leave the balloons as they are;
                                      # by default every balloon the daemon moved is given
                                      # back (the guest's full RAM) before it exits

    [metrics]
    address = "127.0.0.1"             # Prometheus exposition; loopback unless you mean it
    port = 9848                       # 0 turns metrics off

    [host]
    keep_available = "2G"             # shrink balloons while MemAvailable is below this...
    release_available = "2.5G"        # ...grow them back only above this (hysteresis)
    max_memory_pressure = 10.0        # shrink also while memory PSI some avg10 (%) exceeds it
    proc = "/proc"                    # `host run` reads the host's meminfo and
                                      # pressure/memory under this (default: the top-level
                                      # proc); for tests and the soak, which feed their own

    [balloon]
    max_step = "100M"                 # per VM per cycle (Proxmox's bound)...
    max_step_percent = 5.0            # ...and per cent of the VM's RAM (oVirt MoM's bound)
    guest_available_margin = "128M"   # deflate at once when the guest has less available;
                                      # a squeeze stops a step above it
    major_faults_per_cycle = 200      # deflate at once when the guest faults faster than this
    min_change = "1M"                 # ignore smaller target changes
    deflate_hold_cycles = 10          # cycles a VM is left alone after an emergency deflation
    ask_agents = true                 # first ask a VM's guest agent (agent = [...]) to release
                                      # cold cache, then squeeze what it did not give
    ask_deadline = 5.0                # seconds the balloon waits for the answer and the release
    ask_interval = 10.0               # seconds between requests to an agent that gave...
    ask_backoff = 60.0                # ...and to one that refused, was silent, or claimed a
                                      # release its VM's footprint on the host did not show

    [vm_defaults]
    minimum = "256M"                  # never leave a guest less than this
    shares = 1000                     # how the host's shortfall is split between VMs

    [[vm]]                            # overrides for VMs whose name or socket matches a glob
    name = "db-*"
    minimum = "2G"
    shares = 2000
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vmreclaim.errors import ConfigError, VmreclaimError
from vmreclaim.units import parse_size

MIB = 1 << 20


STATS_PERIOD_S = 2
"""The guest statistics period the QEMU and libvirt backends set (seconds): a guest reports
no faster, so no threshold of staleness may be shorter than a few of these. 2 s, not 1: a QMP
read of them is most of a poll's cost (500 VMs at 1 Hz: 5.3 % of a CPU at 1 s, 4.7 % at 2 s),
and the policy moves balloons in steps of seconds."""


def max_stats_age(interval: float, stale_after: float) -> float:
    """Seconds after which guest statistics are stale: `stale_after` polling intervals, or
    statistics periods when those are longer (a 0.2 s poll still gets a report a second)."""
    return stale_after * max(interval, STATS_PERIOD_S)


def default_timeout(interval: float) -> float:
    """Half the polling interval, at most 5 s: a hung VM costs the cycle no more than half of
    it, and QMP, libvirt and the REST VMMs answer in milliseconds when they answer at all."""
    return min(interval / 2, 5.0)


@dataclass(frozen=True)
class VmRule:
    pattern: str
    """A glob matched against the VM's name and its address (QMP socket path)."""
    minimum_bytes: int | None
    shares: int | None

    def matches(self, name: str, address: str) -> bool:
        return fnmatch.fnmatchcase(name, self.pattern) or fnmatch.fnmatchcase(address, self.pattern)


@dataclass(frozen=True)
class PolicyConfig:
    """The balloon policy's knobs; see the module docstring for what each does."""

    keep_available_bytes: int
    release_available_bytes: int
    max_memory_pressure: float | None = 10.0
    max_step_bytes: int = 100 * MIB
    max_step_fraction: float = 0.05
    guest_available_margin_bytes: int = 128 * MIB
    major_faults_per_cycle: int = 200
    min_change_bytes: int = 1 * MIB
    deflate_hold_cycles: int = 10
    default_minimum_bytes: int = 256 * MIB
    default_shares: int = 1000
    rules: tuple[VmRule, ...] = ()
    max_stats_age_s: float = 3.0
    """Guest statistics older than this make a VM neither shrunk nor judged in need."""
    ask_agents: bool = True
    """Ask a VM's guest agent to release cold cache before its balloon squeezes (asking.py)."""
    ask_deadline_s: float = 5.0
    """How long the balloon holds for an answer and for the release to reach the host."""
    ask_interval_s: float = 10.0
    """Least time between two requests to one agent whose last release the host saw."""
    ask_backoff_s: float = 60.0
    """... after a refusal, no answer, or a release the host did not see."""

    def minimum_for(self, name: str, address: str = "") -> int:
        for rule in self.rules:
            if rule.minimum_bytes is not None and rule.matches(name, address):
                return rule.minimum_bytes
        return self.default_minimum_bytes

    def shares_for(self, name: str, address: str = "") -> int:
        for rule in self.rules:
            if rule.shares is not None and rule.matches(name, address):
                return rule.shares
        return self.default_shares


@dataclass(frozen=True)
class HostConfig:
    path: str
    qmp: tuple[str, ...]
    policy: PolicyConfig
    interval: float = 1.0
    timeout: float = 0.5
    """Seconds a hypervisor has to answer one call."""
    stale_after: float = 3.0
    """Intervals (or statistics periods) after which guest statistics are stale; the policy
    holds the same threshold in seconds (`policy.max_stats_age_s`)."""
    socket: Path | None = None
    """Where the daemon publishes its view for `top`; None for nowhere."""
    keep_balloons: bool = False
    """Leave balloons as they are when the daemon stops, instead of deflating them."""
    metrics_address: str = "127.0.0.1"
    metrics_port: int = 9848
    proc: Path = field(default=Path("/proc"))
    """Where VM processes are read (/proc/PID/...) and, unless `host_proc` says otherwise,
    the host's memory."""
    host_proc: Path | None = None
    """Where `host run` reads the host's meminfo and pressure/memory, when not under `proc`:
    lets a test or the soak swing the host's figures while the VMs stay real processes."""
    libvirt: tuple[str, ...] = ()
    cloud_hypervisor: tuple[str, ...] = ()
    firecracker: tuple[str, ...] = ()
    agent: tuple[str, ...] = ()
    """The guest agents' channel sockets, or globs (host/agents.py)."""
    agent_vsock: tuple[str, ...] = ()
    """The VMs' hybrid vsock sockets, or globs: the daemon listens beside each for its agent."""

    @property
    def host_memory_proc(self) -> Path:
        """The /proc whose meminfo and pressure/memory are the host's figures."""
        return self.host_proc or self.proc

    @property
    def has_vms(self) -> bool:
        return bool(self.qmp or self.libvirt or self.cloud_hypervisor or self.firecracker)


_TOP_KEYS = {
    "qmp",
    "libvirt",
    "cloud_hypervisor",
    "firecracker",
    "agent",
    "agent_vsock",
    "interval",
    "timeout",
    "stale_after",
    "socket",
    "keep_balloons",
    "proc",
    "metrics",
    "host",
    "balloon",
    "vm_defaults",
    "vm",
}
_TABLE_KEYS = {
    "metrics": {"address", "port"},
    "host": {"keep_available", "release_available", "max_memory_pressure", "proc"},
    "balloon": {
        "max_step",
        "max_step_percent",
        "guest_available_margin",
        "major_faults_per_cycle",
        "min_change",
        "deflate_hold_cycles",
        "ask_agents",
        "ask_deadline",
        "ask_interval",
        "ask_backoff",
    },
    "vm_defaults": {"minimum", "shares"},
    "vm": {"name", "minimum", "shares"},
}


class _Reader:
    """Typed access to one table, with errors that name the file and the dotted key."""

    def __init__(self, path: str, prefix: str, table: Mapping[str, Any]) -> None:
        self.path = path
        self.prefix = prefix
        self.table = table

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def fail(self, name: str | None, problem: str, hint: str | None = None) -> ConfigError:
        return ConfigError(
            self.path, self.key(name) if name else self.prefix or None, problem, hint=hint
        )

    def check_keys(self, allowed: set[str]) -> None:
        for name in self.table:
            if name not in allowed:
                raise self.fail(
                    name, "unknown key", hint=f"allowed here: {', '.join(sorted(allowed))}"
                )

    def size(self, name: str, default: int | None) -> int | None:
        value = self.table.get(name, default)
        if value is None or (isinstance(value, int) and not isinstance(value, bool)):
            if isinstance(value, int) and value < 0:
                raise self.fail(name, f"{value} is negative", hint="sizes are 0 or more")
            return value
        if isinstance(value, str):
            try:
                return parse_size(value)
            except VmreclaimError as err:
                raise self.fail(name, f"bad size {value!r}", hint=err.hint) from err
        raise self.fail(name, f'expected a size like "512M", got {value!r}')

    def number(self, name: str, default: float | None, *, low: float, high: float) -> float | None:
        value = self.table.get(name, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise self.fail(name, f"expected a number, got {value!r}")
        if not low <= value <= high:
            raise self.fail(name, f"{value} is out of range", hint=f"allowed: {low} to {high}")
        return float(value)

    def integer(self, name: str, default: int, *, low: int, high: int) -> int:
        value = self.table.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(name, f"expected a whole number, got {value!r}")
        if not low <= value <= high:
            raise self.fail(name, f"{value} is out of range", hint=f"allowed: {low} to {high}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.table.get(name, default)
        if not isinstance(value, bool):
            raise self.fail(name, f"expected true or false, got {value!r}")
        return value

    def string(self, name: str, default: str | None) -> str | None:
        value = self.table.get(name, default)
        if value is not None and not isinstance(value, str):
            raise self.fail(name, f"expected a string, got {value!r}")
        return value

    def subtable(self, name: str) -> _Reader:
        value = self.table.get(name, {})
        if not isinstance(value, dict):
            raise self.fail(name, "expected a table", hint=f"write it as [{name}]")
        reader = _Reader(self.path, f"{self.key(name)}.", value)
        reader.check_keys(_TABLE_KEYS[name])
        return reader


def parse_config(data: Mapping[str, Any], path: str) -> HostConfig:
    top = _Reader(path, "", data)
    top.check_keys(_TOP_KEYS)

    qmp = _string_list(top, "qmp", "socket paths or globs")

    host = top.subtable("host")
    keep = host.size("keep_available", None)
    if keep is None:
        raise host.fail(
            "keep_available",
            "missing",
            hint='say how much MemAvailable the host keeps, e.g. keep_available = "2G"',
        )
    release = host.size("release_available", keep + max(256 * MIB, keep // 4))
    assert release is not None
    if release < keep:
        raise host.fail(
            "release_available",
            "is below keep_available",
            hint="it is the level above which balloons grow back: keep_available or more",
        )

    balloon = top.subtable("balloon")
    defaults = top.subtable("vm_defaults")
    policy = PolicyConfig(
        keep_available_bytes=keep,
        release_available_bytes=release,
        max_memory_pressure=host.number("max_memory_pressure", 10.0, low=0.0, high=100.0),
        max_step_bytes=_required(balloon.size("max_step", 100 * MIB)),
        max_step_fraction=_required(balloon.number("max_step_percent", 5.0, low=0.1, high=100.0))
        / 100,
        guest_available_margin_bytes=_required(balloon.size("guest_available_margin", 128 * MIB)),
        major_faults_per_cycle=balloon.integer("major_faults_per_cycle", 200, low=1, high=10**9),
        min_change_bytes=_required(balloon.size("min_change", MIB)),
        deflate_hold_cycles=balloon.integer("deflate_hold_cycles", 10, low=0, high=10**6),
        default_minimum_bytes=_required(defaults.size("minimum", 256 * MIB)),
        default_shares=defaults.integer("shares", 1000, low=1, high=10**6),
        rules=_rules(top),
        ask_agents=balloon.boolean("ask_agents", True),
        ask_deadline_s=_required(balloon.number("ask_deadline", 5.0, low=1.0, high=600.0)),
        ask_interval_s=_required(balloon.number("ask_interval", 10.0, low=1.0, high=86400.0)),
        ask_backoff_s=_required(balloon.number("ask_backoff", 60.0, low=1.0, high=86400.0)),
    )
    metrics = top.subtable("metrics")
    interval = _required(top.number("interval", 1.0, low=0.1, high=3600.0))
    stale_after = _required(top.number("stale_after", 3.0, low=1.0, high=10**6))
    return HostConfig(
        path=path,
        qmp=qmp,
        policy=dataclasses.replace(policy, max_stats_age_s=max_stats_age(interval, stale_after)),
        interval=interval,
        stale_after=stale_after,
        socket=_socket(top),
        keep_balloons=top.boolean("keep_balloons", False),
        timeout=_required(top.number("timeout", default_timeout(interval), low=0.01, high=600.0)),
        metrics_address=_required(metrics.string("address", "127.0.0.1")),
        metrics_port=metrics.integer("port", 9848, low=0, high=65535),
        proc=Path(_required(top.string("proc", "/proc"))),
        host_proc=_path(host.string("proc", None)),
        libvirt=_string_list(top, "libvirt", 'libvirt URIs, e.g. ["qemu:///system"]'),
        cloud_hypervisor=_string_list(top, "cloud_hypervisor", "API socket paths or globs"),
        firecracker=_string_list(top, "firecracker", "API socket paths or globs"),
        agent=_string_list(top, "agent", "agent channel socket paths or globs"),
        agent_vsock=_string_list(top, "agent_vsock", "vsock socket paths (uds_path) or globs"),
    )


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def _socket(top: _Reader) -> Path | None:
    from vmreclaim.host.view import default_socket_path

    value = top.string("socket", None)
    if value is None:
        return default_socket_path()
    return Path(value) if value else None


def _string_list(top: _Reader, name: str, what: str) -> tuple[str, ...]:
    value = top.table.get(name, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise top.fail(name, f"expected a list of {what}, got {value!r}")
    return tuple(value)


def _required(value: Any) -> Any:
    assert value is not None  # every caller passed a default
    return value


def _rules(top: _Reader) -> tuple[VmRule, ...]:
    entries = top.table.get("vm", [])
    if not isinstance(entries, list):
        raise top.fail("vm", "expected an array of tables", hint="write each as [[vm]]")
    rules = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise top.fail("vm", "expected an array of tables", hint="write each as [[vm]]")
        reader = _Reader(top.path, f"vm[{index}].", entry)
        reader.check_keys(_TABLE_KEYS["vm"])
        pattern = reader.string("name", None)
        if not pattern:
            raise reader.fail("name", "missing", hint='a VM name or glob, e.g. name = "db-*"')
        shares = entry.get("shares")
        rules.append(
            VmRule(
                pattern=pattern,
                minimum_bytes=reader.size("minimum", None),
                shares=None
                if shares is None
                else reader.integer("shares", 1000, low=1, high=10**6),
            )
        )
    return tuple(rules)


def with_stale_after(config: HostConfig, stale_after: float) -> HostConfig:
    """The configuration with another staleness threshold (the command line's)."""
    policy = dataclasses.replace(
        config.policy, max_stats_age_s=max_stats_age(config.interval, stale_after)
    )
    return dataclasses.replace(config, stale_after=stale_after, policy=policy)


def load_config(path: Path) -> HostConfig:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # the same parser, published as tomli before it joined the standard library
        import tomli as tomllib

    try:
        with path.open("rb") as file:
            data = tomllib.load(file)
    except FileNotFoundError as err:
        raise ConfigError(str(path), None, "no such file") from err
    except OSError as err:
        raise ConfigError(str(path), None, f"cannot read it: {err.strerror}") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(
            str(path), None, f"not valid TOML: {err}", hint="see https://toml.io"
        ) from err
    return parse_config(data, str(path))
