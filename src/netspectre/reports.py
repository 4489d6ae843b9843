"""What start, restart and stop return to cli: frozen values, each with one to_json(). Pure.

status, myip and newnym return `status.py`'s; verify and doctor `findings.Checks`; enable and
disable `units.UnitReport`. The JSON of each is the command's `--json` output (sorted keys by
cli); the lab and the tests parse it, so its keys and values stay as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

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
    firewall: bool = True  # False: `start --no-firewall`, the machine is NOT torified

    def to_json(self) -> Json:
        return {"active": True, "backend": self.backend, "backend_evidence": self.backend_evidence,
                "policy": dict(self.policy), "ipv6_saved": dict(self.ipv6_saved),
                "firewall": self.firewall, "torified": self.firewall}


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
    firewall: bool = True  # restart keeps the mode: False after `start --no-firewall`

    def to_json(self) -> Json:
        return {"active": True, "backend": self.backend, "backend_evidence": self.backend_evidence,
                "policy": dict(self.policy), "tor_relaunched": self.tor_relaunched,
                "firewall": self.firewall, "torified": self.firewall}


@dataclass(frozen=True)
class StopReport:
    was_active: bool
    backend: str | None
    sysctls_restored: Mapping[str, str]
    notes: tuple[str, ...]

    def to_json(self) -> Json:
        return {"active": False, "was_active": self.was_active, "backend": self.backend,
                "sysctls_restored": dict(self.sysctls_restored), "notes": list(self.notes)}
