"""The text form of each report (what cli prints without --json). Pure."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from netspectre import gatewayinfo

if TYPE_CHECKING:  # annotations only: printing one report needs no other report's class
    from netspectre.findings import Checks, Finding
    from netspectre.reports import RestartReport, StartReport, StopReport
    from netspectre.status import ExitReport, IdleStatus, NewnymReport, Status, TorStatus
    from netspectre.units import UnitReport
    from netspectre.watchframes import Attempt, Frame, TorLive

PORT_NAMES = (("TransPort", "trans_port_listening"), ("DNSPort", "dns_port_listening"),
              ("SocksPort", "socks_port_listening"))


NOT_TORIFIED = ("WARNING: this machine's own traffic is NOT torified (started with "
                "--no-firewall); only `netspectre run` uses Tor")


def start(report: StartReport | RestartReport) -> str:
    if not report.firewall:
        return f"netspectre: Tor only, no firewall\n  {NOT_TORIFIED}"
    return (f"netspectre: active (backend {report.backend}); "
            "all traffic now goes through Tor or is blocked")


def restart(report: RestartReport) -> str:
    text = (f"netspectre: ruleset replaced atomically (backend {report.backend})"
            if report.firewall else "netspectre: Tor only, no firewall (mode kept)")
    if report.tor_relaunched:
        text += "; tor relaunched with the new torrc"
    return text + ("" if report.firewall else f"\n  {NOT_TORIFIED}")


def stop(report: StopReport) -> str:
    text = "netspectre: stopped; rules removed" + (
        ", sysctls restored" if report.sysctls_restored else "")
    return text + "".join(f"\n  note: {n}" for n in report.notes)


def status(report: Status | IdleStatus) -> str:
    lines = []
    if report.recorded is False:
        lines.append("netspectre: not active")
        if report.lockdown is not None:
            lines.append("  LOCKDOWN: `start --boot` failed, so only the blocking ruleset is in "
                         f"force: {report.lockdown.reason}")
            lines.append("  fix the cause, then `netspectre start` (or `netspectre stop` to lift)")
        elif report.leftover_rules:
            lines.append("  leftover rules from: " + ", ".join(report.leftover_rules)
                         + " — run `netspectre stop`")
        lines += _tor(report.tor)
        return "\n".join(lines)
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(report.since))
    if not report.firewall:
        lines.append(f"netspectre: Tor only since {since} ({report.phase}; no firewall)")
        lines.append(f"  {NOT_TORIFIED}")
        if report.config_differs:
            lines.append(f"  NOTE: {report.config_differs}")
        lines += _tor(report.tor)
        return "\n".join(lines)
    if report.active:
        lines.append(f"netspectre: ACTIVE since {since} (backend {report.backend})")
    else:
        lines.append(f"netspectre: NOT ACTIVE (state says {report.phase!r}; "
                     f"ruleset in force: {report.ruleset_in_force}) — run `netspectre stop`")
    if report.config_differs:
        lines.append(f"  NOTE: {report.config_differs}")
    lines += _policy(report.policy)
    lines.append(f"  IPv6 sysctl disabled: {'yes' if report.ipv6_disabled else 'no'}")
    lines += _guard(report.guard)
    lines += gatewayinfo.text(report.gateway)
    lines += _counters(report.counters)
    lines += _tor(report.tor)
    return "\n".join(lines)


def _guard(g: Mapping[str, object]) -> list[str]:
    if not g:
        return []
    if g.get("raw_guard") != "on":
        return [f"  raw guard: off ({g.get('reason')})"]
    guarded = g.get("guarded")
    devices = ", ".join(map(str, guarded)) if isinstance(guarded, list) and guarded else "none"
    watcher = (f"watcher pid {g['watcher_pid']}" if g.get("watcher_pid")
               else "watcher NOT running: new interfaces are not guarded")
    where = devices if g.get("in_force") else "NOT IN FORCE (table netdev netspectre missing)"
    return [f"  raw guard: on — {where}; {watcher}"]


def _policy(pol: Mapping[str, object]) -> list[str]:
    if not pol:
        return []
    raw = pol.get("lan")
    lan_list = [str(x) for x in raw] if isinstance(raw, list) else []
    lan = ", ".join(lan_list) or "none"
    count = pol.get("lan_count", 0)
    if isinstance(count, int) and count > len(lan_list):
        lan += f" … ({count} ranges)"
    return [
        f"  policy: TCP → 127.0.0.1:{pol['trans_port']}, DNS → 127.0.0.1:{pol['dns_port']}, "
        f"virtual network {pol['virtual_network']}, tor user {pol['tor_user']} "
        f"(uid {pol['tor_uid']})",
        f"  LAN: {lan} ({'direct' if pol['allow_lan'] else 'blocked'}); "
        f"incoming: {pol['incoming']}; IPv6: {pol['ipv6']}",
        *bypasses(pol),
    ]


def bypasses(pol: Mapping[str, object]) -> list[str]:
    """The bypasses in force (issue 10): a hole in the kill switch by design, said so."""
    parts = []
    for key, kind, ident in (("bypass_users", "user", "uid"), ("bypass_groups", "group", "gid")):
        found = pol.get(key)
        if isinstance(found, list) and found:
            parts.append(f"{kind}s " + ", ".join(
                f"{e.get('name')} ({ident} {e.get(ident)})" for e in found if isinstance(e, dict)))
    if not parts:
        return []
    return ["  BYPASS (direct, NOT torified, by design): " + "; ".join(parts)]


def _counters(counters: Mapping[str, Mapping[str, int]]) -> list[str]:
    if not counters:
        return []
    torified = counters.get("tcp_torified", {}).get("packets", 0)
    dns = counters.get("dns_redirected", {}).get("packets", 0)
    blocked = {k.removeprefix("blocked_"): v["packets"] for k, v in sorted(counters.items())
               if k.startswith("blocked_") and v["packets"]}
    gateway = [f"{k.removeprefix('gateway_')} {counters[k]['packets']}"
               for k in ("gateway_torified", "gateway_dns", "gateway_refused") if k in counters]
    return [f"  connections torified: {torified}; DNS queries redirected: {dns}",
            *(["  gateway packets: " + ", ".join(gateway)] if gateway else []),
            "  packets blocked: " + (", ".join(f"{k} {v}" for k, v in blocked.items())
                                     or "none")]


def _tor(tor: TorStatus) -> list[str]:
    pid = f", pid {tor.tor_pid}" if tor.tor_pid else ""
    ports = [f"{name} {'listening' if getattr(tor, key) else 'NOT listening'}"
             for name, key in PORT_NAMES]
    return [f"  tor ({tor.mode.value}{pid}): {tor.message}".rstrip(": "),
            "    " + "; ".join(ports)]


def kv(title: str, data: Mapping[str, object]) -> str:
    lines = [title]
    for key, value in data.items():
        if value in (None, [], {}):
            continue
        lines.append(f"  {key}: {value}")
    return "\n".join(lines)


def myip(report: ExitReport) -> str:
    return kv("exit check:", report.to_json())


def newnym(report: NewnymReport) -> str:
    return kv("newnym:", report.to_json())


def unit(report: UnitReport) -> str:
    return kv(f"netspectre: {'enabled' if report.enabled else 'disabled'} at boot",
              report.to_json())


def checks(report: Checks) -> str:
    """verify/doctor as a table: result, check, what happened (and the fix under a failure)."""
    return table(report.findings, ok=report.ok)


def table(findings: tuple[Finding, ...], *, ok: bool) -> str:
    width = min(max((len(f.check) for f in findings), default=0), 48)
    lines = []
    for f in findings:
        mark = "skip" if f.ok is None else ("ok" if f.ok else "FAIL")
        lines.append(f"{mark:<4}  {f.check:<{width}}  {f.detail}".rstrip())
        if f.fix and f.ok is False:
            lines.append(f"{'':<4}  {'':<{width}}  fix: {f.fix}")
    passed = sum(1 for f in findings if f.ok)
    failed = sum(1 for f in findings if f.ok is False)
    lines.append(f"{'PASS' if ok else 'FAIL'}: {passed} ok, {failed} failed"
                 + (f", {len(findings) - passed - failed} skipped"
                    if passed + failed < len(findings) else ""))
    return "\n".join(lines)


# -- watch -------------------------------------------------------------------------------------


def attempt(a: Attempt) -> str:
    """`uid 1000 (firefox): UDP 443 → 203.0.113.5 (QUIC) refused ×12`"""
    who = f"uid {a.uid if a.uid is not None else '?'} ({a.program})"
    if a.program.startswith("forwarded"):
        who = a.program
    port = f" {a.port}" if a.port is not None else ""
    label = f" ({a.label})" if a.label else ""
    return f"{who}: {a.proto}{port} → {a.dst}{label} refused ×{a.count} [{a.counter}]"


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit_, step in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= step:
            return f"{n / step:.1f} {unit_}"
    return f"{n} B"


def watch_tor(t: TorLive) -> str:
    if t.error:
        return f"tor: {t.error}"
    boot = f"{t.bootstrap} %" if t.bootstrap is not None else "?"
    return (f"tor: bootstrapped {boot}, {t.circuits if t.circuits is not None else '?'} "
            f"circuits, read {_size(t.read)}, written {_size(t.written)}")


def watch_summary(f: Frame) -> str:
    """One line: Tor, the counters that moved, the refused total."""
    moving = [f"{c.name} {c.packets} ({c.rate:.1f}/s)" for c in f.counters if c.packets]
    lost = f"; {f.lost} log batches lost" if f.lost else ""
    return (f"{time.strftime('%H:%M:%S', time.localtime(f.at))} {watch_tor(f.tor)} | "
            + (", ".join(moving) or "no counter moved")
            + f" | refused {f.refused} from {len(f.attempts)} sources{lost}")


def watch_screen(f: Frame, *, rows: int = 20) -> str:
    """The whole view, redrawn once a second on a terminal."""
    when = time.strftime("%H:%M:%S", time.localtime(f.at))
    lines = [f"netspectre watch — {when} — backend {f.backend} (Ctrl-C to quit)",
             "  " + watch_tor(f.tor), "", f"  {'counter':<18}{'packets':>12}{'rate':>10}"]
    lines += [f"  {c.name:<18}{c.packets:>12}{c.rate:>8.1f}/s" for c in f.counters]
    lines += ["", f"  refused attempts ({f.refused} packets logged"
                  + (f", {f.lost} batches lost" if f.lost else "") + "):"]
    lines += ["    " + attempt(a) for a in f.attempts[:rows]] or ["    none"]
    if len(f.attempts) > rows:
        lines.append(f"    … and {len(f.attempts) - rows} more")
    return "\n".join(lines)
