"""One checked condition (ok, failed or skipped), in plain words, with its fix. Pure.

The one row type of `verify`, `doctor`, verify's leak probes and the lab demo: cli formats
them all the same way (an aligned table, the fix under each failure).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Finding:
    check: str
    ok: bool | None  # None: skipped / not applicable
    detail: str = ""
    fix: str = ""
    # More JSON fields of this kind of row (a probe's expected/outcome, a demo step's timing).
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        return {True: "PASS", False: "FAIL", None: "SKIP"}[self.ok]

    def to_json(self) -> dict[str, Any]:
        return {"check": self.check, "ok": self.ok, "detail": self.detail, "fix": self.fix,
                **self.extra}


def all_ok(findings: tuple[Finding, ...] | list[Finding]) -> bool:
    """Nothing failed (skipped rows do not fail a report)."""
    return all(f.ok is not False for f in findings)


@dataclass(frozen=True)
class Checks:
    """verify and doctor: findings in the order they ran."""

    findings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        return all_ok(self.findings)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": [f.to_json() for f in self.findings]}
