"""What status, myip and newnym return to cli: frozen values, each with one to_json(). Pure.

Their JSON is the commands' `--json` output: keys and values stay as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from netspectre.config import TorMode
from netspectre.reports import Json


@dataclass(frozen=True)
class TorStatus:
    mode: TorMode
    trans_port_listening: bool
    dns_port_listening: bool
    socks_port_listening: bool
    running: bool
    up: bool
    message: str
    bootstrap: int | None = None
    bootstrap_phase: str | None = None
    bootstrap_warning: str = ""
    # managed mode: our supervisor and tor
    supervisor_pid: int | None = None
    supervisor_running: bool = False
    tor_pid: int | None = None
    notice_log: str = ""
    data_directory: str = ""
    # system mode: where we asked it
    control: str = ""

    def to_json(self) -> Json:
        out: Json = {
            "mode": self.mode.value,
            "trans_port_listening": self.trans_port_listening,
            "dns_port_listening": self.dns_port_listening,
            "socks_port_listening": self.socks_port_listening,
        }
        if self.mode is TorMode.MANAGED:
            out.update(supervisor_pid=self.supervisor_pid,
                       supervisor_running=self.supervisor_running, tor_pid=self.tor_pid,
                       running=self.running, notice_log=self.notice_log,
                       data_directory=self.data_directory)
        else:
            out.update(control=self.control, running=self.running)
        out["bootstrap"] = self.bootstrap
        out["bootstrap_phase"] = self.bootstrap_phase
        if self.bootstrap_warning:
            out["bootstrap_warning"] = self.bootstrap_warning
        out["up"] = self.up
        out["message"] = self.message
        return out


@dataclass(frozen=True)
class Lockdown:
    reason: str
    since: float | None = None

    def to_json(self) -> Json:
        return {"reason": self.reason} if self.since is None else {"reason": self.reason,
                                                                     "since": self.since}


@dataclass(frozen=True)
class IdleStatus:
    """`status` with nothing recorded: leftovers, a boot lockdown, a tor that may be running."""

    leftover_rules: tuple[str, ...]
    lockdown: Lockdown | None
    tor: TorStatus

    active = False
    recorded: ClassVar[Literal[False]] = False  # no state: cli_text says other things

    def to_json(self) -> Json:
        return {"active": False, "torified": False, "leftover_rules": list(self.leftover_rules),
                "lockdown": self.lockdown.to_json() if self.lockdown else None,
                "tor": self.tor.to_json()}


@dataclass(frozen=True)
class Status:
    """`status` with a recorded state: what was recorded, and what the kernel has now."""

    active: bool
    phase: str
    backend: str
    since: float
    ruleset_in_force: bool
    policy: Mapping[str, object]
    counters: Mapping[str, Mapping[str, int]]
    ipv6_disabled: bool
    tor: TorStatus
    # Set only when the config on disk would give another plan than the one in force.
    config_differs: str = ""
    # The raw guard as the kernel has it (commands/report.guard_status).
    guard: Mapping[str, object] = field(default_factory=dict)
    # [gateway] (gatewayinfo.status): {} without one, so older configs' JSON is unchanged.
    gateway: Mapping[str, object] = field(default_factory=dict)
    # False: `start --no-firewall`: Tor runs, no ruleset; the machine is NOT torified.
    firewall: bool = True

    recorded: ClassVar[Literal[True]] = True

    @property
    def torified(self) -> bool:
        """The machine's own traffic goes through Tor (or is blocked): active with rules."""
        return self.active and self.firewall and self.ruleset_in_force

    def to_json(self) -> Json:
        out: Json = {
            "active": self.active, "firewall": self.firewall, "torified": self.torified,
            "phase": self.phase, "backend": self.backend,
            "since": self.since, "ruleset_in_force": self.ruleset_in_force,
            "policy": dict(self.policy),
            "counters": {k: dict(v) for k, v in self.counters.items()},
            "ipv6_disabled": self.ipv6_disabled, "tor": self.tor.to_json(),
        }
        if self.config_differs:
            out["config_differs"] = self.config_differs
        if self.guard:
            out["raw_guard"] = dict(self.guard)
        if self.gateway:
            out["gateway"] = dict(self.gateway)
        return out


@dataclass(frozen=True)
class NewnymReport:
    rate_limited: bool
    delay_seconds: int
    message: str

    def to_json(self) -> Json:
        return {"signal": "NEWNYM", "accepted": True, "rate_limited": self.rate_limited,
                "delay_seconds": self.delay_seconds, "message": self.message}


@dataclass(frozen=True)
class ExitReport:
    """`myip`: what the exit-check service saw, asked through Tor."""

    is_tor: bool
    ip: str
    url: str
    proxy: str
    failed: tuple[str, ...] = ()

    def to_json(self) -> Json:
        return {"IsTor": self.is_tor, "IP": self.ip, "url": self.url, "proxy": self.proxy,
                "failed": list(self.failed)}
