"""What commands return to cli: frozen values, each with one to_json(). Pure.

The JSON of each is the command's `--json` output (sorted keys by cli); the lab and the tests
parse it, so its keys and values stay as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from netspectre.config import TorMode
from netspectre.findings import Finding, all_ok

Json = dict[str, Any]


def ago(since: float, now: float) -> str:
    """"1h05m ago", "3 d ago": how long ago a recorded time was, in words."""
    seconds = max(0, int(now - since))
    if seconds >= 86400:
        return f"{seconds // 86400} d ago"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m ago"


@dataclass(frozen=True)
class StartReport:
    backend: str
    backend_evidence: str
    policy: Mapping[str, object]
    ipv6_saved: Mapping[str, str]

    def to_json(self) -> Json:
        return {"active": True, "backend": self.backend, "backend_evidence": self.backend_evidence,
                "policy": dict(self.policy), "ipv6_saved": dict(self.ipv6_saved)}


@dataclass(frozen=True)
class AlreadyActive:
    """`start --boot` when the unit runs a second time: nothing to do."""

    backend: str

    def to_json(self) -> Json:
        return {"active": True, "backend": self.backend, "already_active": True}


@dataclass(frozen=True)
class RestartReport:
    backend: str
    backend_evidence: str
    policy: Mapping[str, object]
    tor_relaunched: bool

    def to_json(self) -> Json:
        return {"active": True, "backend": self.backend, "backend_evidence": self.backend_evidence,
                "policy": dict(self.policy), "tor_relaunched": self.tor_relaunched}


@dataclass(frozen=True)
class StopReport:
    was_active: bool
    backend: str | None
    sysctls_restored: Mapping[str, str]
    notes: tuple[str, ...]

    def to_json(self) -> Json:
        return {"active": False, "was_active": self.was_active, "backend": self.backend,
                "sysctls_restored": dict(self.sysctls_restored), "notes": list(self.notes)}


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

    def to_json(self) -> Json:
        return {"active": False, "leftover_rules": list(self.leftover_rules),
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

    def to_json(self) -> Json:
        out: Json = {
            "active": self.active, "phase": self.phase, "backend": self.backend,
            "since": self.since, "ruleset_in_force": self.ruleset_in_force,
            "policy": dict(self.policy),
            "counters": {k: dict(v) for k, v in self.counters.items()},
            "ipv6_disabled": self.ipv6_disabled, "tor": self.tor.to_json(),
        }
        if self.config_differs:
            out["config_differs"] = self.config_differs
        return out


@dataclass(frozen=True)
class Checks:
    """verify and doctor: findings in the order they ran."""

    findings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        return all_ok(self.findings)

    def to_json(self) -> Json:
        return {"ok": self.ok, "checks": [f.to_json() for f in self.findings]}


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


@dataclass(frozen=True)
class UnitReport:
    """enable / disable: the unit files written or removed, and what happened now."""

    enabled: bool
    paths: tuple[str, ...]
    now: bool | None = None  # with --now: started (enable) / stopped (disable)
    note: str = ""

    def to_json(self) -> Json:
        out: Json = {("unit" if self.enabled else "removed"): list(self.paths),
                     "at_boot": self.enabled}
        if self.now is not None:
            out["started" if self.enabled else "stopped"] = self.now
        else:
            out["note"] = self.note
        return out


@dataclass(frozen=True)
class Written:
    """`_units`: the files written."""

    written: tuple[str, ...]

    def to_json(self) -> Json:
        return {"written": list(self.written)}
