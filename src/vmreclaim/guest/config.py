"""The agent's configuration: defaults, an INI file, then command-line options, in that order.

The file has an `[agent]` section and one section per policy, named as the policy; each key is a
field of that policy's config dataclass, spelled the same, and the field's suffix says its unit:

    _bytes, _bytes_per_s   a size: 128M, 1G, 4096 (binary units, vmreclaim.units.parse_size)
    _s                     seconds, a number >= 0
    _ratio, _ratio_per_min a share, a number from 0 to 1

Unknown sections or keys, bad values and unreadable files are UsageErrors naming the file, the
key and what is allowed. INI rather than TOML: tomllib is Python 3.11+, the guest may have 3.9.
"""

from __future__ import annotations

import configparser
import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vmreclaim.errors import UsageError
from vmreclaim.guest.policies import DEFAULT_POLICY, POLICIES, get_policy
from vmreclaim.units import format_size, parse_size

AGENT_SECTION = "agent"
# (field-name suffix, kind); the longest matching suffix wins, so order longest first.
_KINDS = (
    ("_path", "path"),
    ("_bytes_per_s", "size"),
    ("_bytes", "size"),
    ("_ratio_per_min", "ratio"),
    ("_ratio", "ratio"),
    ("_s", "seconds"),
)
_ALLOWED = {
    "size": "a size such as 128M or 1G",
    "ratio": "a number from 0 to 1",
    "seconds": "a number of seconds >= 0",
    "policy": f"one of {', '.join(POLICIES)}",
    "path": "an absolute path, or nothing",
}


@dataclass(frozen=True)
class AgentConfig:
    # The policy that decides (see vmreclaim.guest.policies).
    policy: str = DEFAULT_POLICY
    # Seconds between ticks. Issue 3 asks for 1-2 s; the agent's cost target (< 0.5 % of one CPU)
    # is set at 2 s. WSL2 baselines keep their own 10 s sampling whatever this is.
    interval_s: float = 2.0
    # Longest one tick's reclaim may run: checked between 256 MiB memory.reclaim writes, so a
    # 1 GiB gradual step that stalls (WSL2 users report EAGAIN hangs) cannot hold the loop.
    reclaim_time_limit_s: float = 10.0
    # node_exporter's textfile collector: rewrite this *.prom file with the agent's metrics
    # after every tick (vmreclaim.guest.textfile); empty: none.
    textfile_path: str = ""
    # The host channel: the device to write a report to after every tick
    # (vmreclaim.guest.hostport), or "vsock" / "vsock:PORT" for a vsock stream to the host;
    # empty: the virtio-serial port named org.vmreclaim.agent.0 when the host added one, else
    # vsock when the guest has a virtio-vsock device (Cloud Hypervisor, Firecracker).
    channel_path: str = ""


@dataclass(frozen=True)
class Settings:
    """The effective configuration: the agent's, and every policy's (only one is used)."""

    agent: AgentConfig
    policy_configs: Mapping[str, Any] = field(default_factory=dict)
    source: Path | None = None  # the config file, if any

    def policy_config(self) -> Any:
        """The config of the chosen policy (its defaults when the file has no section for it)."""
        name = self.agent.policy
        if name in self.policy_configs:
            return self.policy_configs[name]
        return get_policy(name).config_type()


def knob_kind(name: str) -> str | None:
    """What a config field holds, from its name's suffix: "size", "ratio", "seconds" or None."""
    if name == "policy":
        return "policy"
    return next((kind for suffix, kind in _KINDS if name.endswith(suffix)), None)


def parse_knob(name: str, text: str) -> Any:
    """The value of field `name` from its text; UsageError (without the file) when bad."""
    kind = knob_kind(name)
    text = text.strip()
    if kind == "policy":
        get_policy(text)
        return text
    if kind == "size":
        return parse_size(text)
    if kind == "path" and (not text or text.startswith("/")):
        return text
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if kind == "ratio" and 0 <= number <= 1:
        return number
    if kind == "seconds" and 0 <= number < math.inf:
        return number
    raise UsageError(f"bad value {text!r} for {name}", hint=f"use {_ALLOWED.get(kind or '', '?')}")


def _section(path: Path, section: str, values: Mapping[str, str], config_type: Any) -> Any:
    fields = [f.name for f in dataclasses.fields(config_type)]
    changes = {}
    for key, text in values.items():
        if key not in fields:
            allowed = ", ".join(fields) or "no keys"
            raise UsageError(
                f"{path}: unknown key {key!r} in [{section}]", hint=f"[{section}] takes {allowed}"
            )
        try:
            changes[key] = parse_knob(key, text)
        except UsageError as err:
            raise UsageError(
                f"{path}: [{section}] {key} = {text.strip()!r}: {err.message}", hint=err.hint
            ) from err
    if changes.get("interval_s") == 0:
        raise UsageError(f"{path}: [{section}] interval_s must be above 0", hint="e.g. 2")
    return config_type(**changes)


def read_config_file(path: Path) -> Settings:
    """Parse the INI file at `path` into Settings."""
    # No DEFAULT section (its keys would leak into every section), no %-interpolation.
    parser = configparser.ConfigParser(
        interpolation=None, default_section="\0", inline_comment_prefixes=("#", ";")
    )
    try:
        with path.open(encoding="utf-8") as file:
            parser.read_file(file)
    except OSError as err:
        raise UsageError(
            f"cannot read config file {path}: {err.strerror or err}",
            hint="check the path and its permissions, or leave out --config",
        ) from err
    except (configparser.Error, UnicodeDecodeError) as err:
        raise UsageError(
            f"{path} is not a valid INI file: {err}",
            hint="write `[section]` headers and `key = value` lines",
        ) from err
    sections = [AGENT_SECTION, *POLICIES]
    agent = AgentConfig()
    policy_configs = {}
    for section in parser.sections():
        if section not in sections:
            raise UsageError(
                f"{path}: unknown section [{section}]", hint=f"use {', '.join(sections)}"
            )
        values = dict(parser.items(section))
        if section == AGENT_SECTION:
            agent = _section(path, section, values, AgentConfig)
        else:
            policy_configs[section] = _section(path, section, values, POLICIES[section].config_type)
    return Settings(agent, policy_configs, path)


def load_settings(
    path: Path | None,
    policy: str | None = None,
    interval_s: float | None = None,
    textfile: Path | None = None,
    channel: str | None = None,
) -> Settings:
    """Defaults, overridden by the file at `path`, overridden by the command-line options."""
    settings = Settings(AgentConfig()) if path is None else read_config_file(path)
    changes: dict[str, Any] = {}
    if textfile is not None:
        changes["textfile_path"] = str(textfile.absolute())
    if channel is not None:
        # "vsock[:PORT]" names no file; anything else is a device, kept absolute.
        vsock = channel == "vsock" or channel.startswith("vsock:")
        changes["channel_path"] = channel if vsock else str(Path(channel).absolute())
    if policy is not None:
        get_policy(policy)
        changes["policy"] = policy
    if interval_s is not None:
        if not 0 < interval_s < math.inf:
            raise UsageError(f"bad interval {interval_s}", hint="give a positive number of seconds")
        changes["interval_s"] = interval_s
    return dataclasses.replace(settings, agent=dataclasses.replace(settings.agent, **changes))


def describe(config: Any) -> str:
    """`key=value` for every field of a config dataclass, sizes with units, for the start log."""
    parts = []
    for item in dataclasses.fields(config):
        value = getattr(config, item.name)
        if isinstance(value, str):
            shown = value
        elif knob_kind(item.name) == "size":
            shown = format_size(value)
        else:
            shown = f"{value:g}"
        parts.append(f"{item.name}={shown}")
    return " ".join(parts) or "(no knobs)"
