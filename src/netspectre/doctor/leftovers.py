"""Judges for what a start/stop left behind: the state file, our rules, the boot lockdown, IPv6
sysctls. "No internet after stop" is nearly always one of these. Pure."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from netspectre.doctor.findings import needs_root
from netspectre.findings import Finding
from netspectre.reports import ago
from netspectre.state import Phase, State

STOP = "sudo netspectre stop"


@dataclass(frozen=True)
class StateFacts:
    root: bool
    state: State | None = None
    error: str = ""  # the state file is unreadable (StateError's message)
    boot_id: str = ""  # this boot's
    rules: tuple[str, ...] | None = None  # backends holding rules of ours (None: not looked)
    lockdown: Mapping[str, Any] | None = None  # paths.lockdown's content
    lockdown_error: str = ""
    ipv6: Mapping[str, str] | None = None  # {"all": "1", "default": "1"} disable_ipv6 values
    now: float = 0.0


def current(facts: StateFacts) -> State | None:
    """The state of this boot (a state from before a reboot describes nothing live)."""
    s = facts.state
    return s if s is not None and s.boot_id == facts.boot_id else None


def is_active(facts: StateFacts) -> bool:
    s = current(facts)
    return s is not None and s.phase is Phase.ACTIVE


def active(facts: StateFacts) -> Finding:
    check = "netspectre active"
    if not facts.root:
        return needs_root(check, "the state in /run/netspectre is readable only by root")
    s = current(facts)
    if s is None or s.phase is not Phase.ACTIVE:
        return Finding(check, None, "not active: traffic goes out directly, not through Tor",
                       "sudo netspectre start")
    if not s.firewall:
        return Finding(check, False, "Tor only (started with --no-firewall): this machine's "
                       "own traffic is NOT torified", "sudo netspectre start")
    if facts.rules is not None and s.backend not in facts.rules:
        return Finding(check, False,
                       f"the state says active (backend {s.backend}) but its rules are not in "
                       "force: traffic is NOT protected", "sudo netspectre restart")
    return Finding(check, True,
                   f"since {ago(s.since, facts.now or time.time())}, backend {s.backend}")


def state(facts: StateFacts) -> Finding:
    check = "state"
    if not facts.root:
        return needs_root(check, "the state in /run/netspectre is readable only by root")
    if facts.error:
        return Finding(check, False, f"{facts.error}: netspectre cannot tell what is in force",
                       f"{STOP} --force (cleans what is ours even without state)")
    s = facts.state
    rules = list(facts.rules or ())
    if s is None:
        if rules:
            return Finding(
                check, False,
                f"netspectre rules are in force ({', '.join(rules)}) but nothing recorded them: "
                "they block everything but Tor and Tor is not behind them — this is why there "
                "is no internet", STOP)
        return Finding(check, True, "no state, no rules of ours: nothing is in force")
    if s.boot_id != facts.boot_id:
        return Finding(check, False,
                       "the state file is from a previous boot (the reboot reset rules and "
                       "sysctls): it describes nothing live", f"{STOP} (it removes the stale file)")
    if s.phase is Phase.APPLYING:
        return Finding(check, False,
                       "a `start` or `restart` was interrupted half-way (phase applying): rules "
                       "and IPv6 sysctls may be partly in force", f"{STOP}, then sudo netspectre "
                       "start")
    if s.phase is Phase.STOPPING:
        return Finding(check, False,
                       "a `stop` was interrupted (phase stopping): rules or sysctls may still be "
                       "in force", STOP)
    return Finding(check, True, f"active, recorded {ago(s.since, facts.now or time.time())}")


def lockdown(facts: StateFacts) -> Finding:
    check = "boot lockdown"
    if not facts.root:
        return needs_root(check, "the lockdown marker in /run/netspectre is readable only by root")
    if facts.lockdown_error:
        return Finding(check, False, f"boot lockdown marker present but unreadable "
                       f"({facts.lockdown_error}): everything but loopback may be blocked", STOP)
    if facts.lockdown is None:
        return Finding(check, True, "no lockdown")
    reason = str(facts.lockdown.get("reason") or "unknown reason")
    since = facts.lockdown.get("since")
    when = (f" {ago(float(since), facts.now or time.time())}"
            if isinstance(since, int | float) else "")
    return Finding(
        check, False,
        f"`netspectre start --boot` failed{when} ({reason}), so everything but loopback is "
        "blocked (the kill switch stays closed without Tor)",
        f"fix the cause, then: sudo netspectre start — or lift the block: {STOP}")


def ipv6(facts: StateFacts, *, keys: Sequence[str] = ("all", "default")) -> Finding:
    check = "IPv6 sysctls"
    values = facts.ipv6
    if values is None:
        return Finding(check, None, "IPv6 is not available in this kernel")
    off = [k for k in keys if values.get(k) == "1"]
    if not off:
        return Finding(check, True, "IPv6 is enabled (disable_ipv6 = 0)")
    s = current(facts)
    if s is not None:
        return Finding(check, True, "IPv6 is off: netspectre turned it off "
                       "(ipv6 = \"disable\"); `stop` restores it")
    if not facts.root:
        return needs_root(check, "IPv6 is off; only root can tell whether netspectre did it")
    names = " ".join(f"net.ipv6.conf.{k}.disable_ipv6=0" for k in off)
    return Finding(
        check, False,
        "IPv6 is off (" + ", ".join(f"net.ipv6.conf.{k}.disable_ipv6 = 1" for k in off)
        + ") but netspectre is not active: likely left by a netspectre that was killed before "
        "its `stop` (ignore this if you turned IPv6 off yourself)",
        f"sudo sysctl -w {names}")
