"""Judges for Tor: installed or reachable, bootstrapped, and the clock it complains about. Pure."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from netspectre.config import DEFAULT_PATH, Config, TorMode
from netspectre.doctor.findings import install, needs_root
from netspectre.findings import Finding
from netspectre.tor import systemtor
from netspectre.tor.protocol import BootstrapEvent


@dataclass(frozen=True)
class TorFacts:
    binary: str | None  # `tor` on PATH
    managers: tuple[str, ...]  # package managers on PATH (for the install command)
    running: bool  # managed: our tor's process is alive; system: its control port answered
    pid: int | None = None
    supervisor: bool = False  # managed: our supervisor is alive (it restarts tor)
    reachable: bool = False  # the control port answered and we authenticated
    error: str = ""  # why it did not
    bootstrap: BootstrapEvent | None = None
    lacking: tuple[str, ...] = ()  # system mode: torrc lines the running tor lacks
    complaint: str = ""  # tor's last [err]/[warn] from its logs
    log: str = ""  # where tor's log is
    root: bool = True


def _system_fix(config: Config, lines: Sequence[str]) -> str:
    control = config.tor.control
    how = (f"ControlSocket {control}" if control.startswith("/")
           else f"ControlPort {control.rpartition(':')[2]}")
    wanted = [how, "CookieAuthentication 1", *lines]
    return (f"sudo systemctl start tor; its {systemtor.TORRC} needs these lines "
            f"(then `sudo systemctl restart tor`): " + " | ".join(wanted))


def installed(config: Config, facts: TorFacts) -> Finding:
    """Managed: the `tor` binary. System: the running tor, reachable and complete."""
    if config.tor.mode is TorMode.MANAGED:
        if facts.binary is None:
            return Finding(
                "tor installed", False,
                "no `tor` program on PATH: netspectre runs its own tor and cannot start one",
                install("tor", facts.managers))
        return Finding("tor installed", True, facts.binary)
    check = "system tor reachable"
    if not facts.reachable:
        if not facts.root and "cookie" in facts.error:
            return needs_root(check, facts.error)
        detail = (f"tor.mode = \"system\", but tor's control port {config.tor.control} does "
                  f"not answer ({facts.error or 'no reply'})")
        if facts.binary is None:
            return Finding(check, False, detail + "; and no `tor` program is installed",
                           install("tor", facts.managers) + " && "
                           + _system_fix(config, list(systemtor.wanted(config).values())))
        return Finding(check, False, detail,
                       _system_fix(config, list(systemtor.wanted(config).values())))
    if facts.lacking:
        return Finding(
            check, False,
            f"the system tor at {config.tor.control} lacks: " + ", ".join(facts.lacking),
            _system_fix(config, facts.lacking))
    return Finding(check, True, f"{config.tor.control} answers and offers what netspectre needs")


def bootstrapped(config: Config, facts: TorFacts, *, active: bool) -> Finding:
    check = "tor bootstrapped"
    warned = f"; Tor's last warning: {facts.complaint}" if facts.complaint else ""
    if config.tor.mode is TorMode.MANAGED and not facts.running:
        if not active:
            return Finding(check, None, "tor is not running (netspectre is not active)",
                           "sudo netspectre start")
        if facts.supervisor:
            return Finding(
                check, False,
                "netspectre is active but its tor is not running: the kill switch holds, nothing "
                "gets out; the supervisor keeps restarting tor" + warned,
                f"read why tor exits in {facts.log}, fix it, then: sudo netspectre restart")
        return Finding(
            check, False,
            "netspectre is active but its tor is not running (nor its supervisor): the kill "
            "switch holds, nothing gets out" + warned,
            "sudo netspectre restart")
    if config.tor.mode is TorMode.SYSTEM and not facts.reachable:
        return Finding(check, None, "the system tor's control port does not answer "
                       "(see `system tor reachable`)", "sudo systemctl start tor")
    if not facts.reachable:
        if not facts.root:
            return needs_root(check, "tor's control cookie is readable only by root and tor")
        pid = f" (pid {facts.pid})" if facts.pid else ""
        return Finding(check, False,
                       f"tor runs{pid} but its control socket does not answer: {facts.error}",
                       "sudo netspectre restart")
    event = facts.bootstrap
    if event is None:
        return Finding(check, False, "tor answers but reports no bootstrap phase",
                       "sudo netspectre restart")
    phase = f"{event.progress} % ({event.tag}: {event.summary})"
    if event.progress >= 100:
        return Finding(check, True, f"bootstrapped {phase}")
    warning = event.warning or facts.complaint
    detail = f"Tor is at {phase}" + (f"; Tor's last warning: {warning}" if warning else "")
    if active:
        detail += "; until it reaches 100 % the kill switch blocks all traffic"
    return Finding(
        check, False, detail,
        "wait and watch `sudo netspectre status`; if it stays stuck: check the network "
        f"(and the clock), or set [tor] bridges in {config.path or DEFAULT_PATH}"
        + (f"; tor's log: {facts.log}" if facts.log else ""))


# -- clock ------------------------------------------------------------------------------------

_CONSENSUS = re.compile(r"Our clock is (?P<amount>.+?) (?P<dir>behind|ahead) the time published")
_NETINFO = re.compile(r"our clock is (?P<dir>ahead|behind) by (?P<amount>.+?), or that theirs")
_DIRECTORY = re.compile(r"we are (?P<amount>\d+ minutes) (?P<dir>ahead|behind), or the directory")
_UNIT = re.compile(r"(\d+) (day|hour|minute|second)s?")
# A new log file (tor started again): older complaints are history.
_OPENED = re.compile(r"Tor \S+ opening (new )?log file")


@dataclass(frozen=True)
class Skew:
    behind: bool  # our clock is behind the real time
    amount: str  # "2 hours, 3 minutes"
    line: str


def find_skew(lines: Sequence[str]) -> Skew | None:
    """The latest clock-skew complaint since tor last opened its log, from notice-log lines."""
    start = max((i for i, line in enumerate(lines) if _OPENED.search(line)), default=-1)
    found: Skew | None = None
    for line in lines[start + 1:]:
        for pattern in (_CONSENSUS, _NETINFO, _DIRECTORY):
            m = pattern.search(line)
            if m:
                found = Skew(m["dir"] == "behind", m["amount"].strip(), line.strip())
                break
        else:
            if "CLOCK_SKEW" in line or "Clock skew" in line:
                found = Skew(False, "", line.strip())
    return found


def date_argument(skew: Skew) -> str:
    """'+2 hours 3 minutes' for `date -s` (GNU date reads it relative to now)."""
    parts = [f"{n} {unit}{'s' if n != '1' else ''}" for n, unit in _UNIT.findall(skew.amount)]
    return ("+" if skew.behind else "-") + " ".join(parts) if parts else ""


def clock(log_lines: Sequence[str] | None, *, log: str, active: bool) -> Finding:
    check = "clock"
    if log_lines is None:
        return Finding(check, None, f"no tor log to read ({log})")
    skew = find_skew(log_lines)
    if skew is None:
        return Finding(check, True, "tor's log has no clock-skew warning")
    message = skew.line.split("] ", 1)[-1]
    how = (f"your clock is {skew.amount} {'behind' if skew.behind else 'ahead'}"
           if skew.amount else "your clock is wrong")
    detail = (f"Tor says {how}; a consensus that is not valid at the local time is refused, "
              f"so Tor cannot bootstrap (\"{message[:160]}\")")
    arg = date_argument(skew)
    fix = f"sudo date -s '{arg}'" if arg else "sudo date -u -s 'YYYY-MM-DD HH:MM:SS' (UTC now)"
    if active:
        # NTP is UDP (port 123): while active our rules refuse it for everyone but Tor's user.
        fix += ("; NTP cannot sync while netspectre is active (our rules refuse UDP), so "
                "`sudo timedatectl set-ntp true` helps only after `sudo netspectre stop`")
    else:
        fix += " (or let NTP set it: sudo timedatectl set-ntp true)"
    return Finding(check, False, detail, fix + "; Tor retries on its own once the clock is right")
