"""What `lab demo` checks and how it judges the evidence: the plan (each check and what it
proves), the leak probes, and the verdict on each result. Pure: results in, Finding out.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from netspectre.findings import Finding
from netspectre.lab.info import LabInfo
from netspectre.lab.spec import ECHO_NAME, Layout

WHOAMI = "resolver.test"  # the lab's DNS answers it with the address the query arrived on


def check(key: str, ok: bool | None, seconds: float, evidence: str,
          data: dict[str, Any] | None = None) -> Finding:
    """A demo step's verdict, as the one finding type: check is the step's key (PLAN), detail
    its evidence; the step's time and raw evidence ride along. ok None: not run, because a step
    it needs failed."""
    return Finding(key, ok, evidence, extra={"seconds": seconds, "data": data or {}})


def row(f: Finding) -> dict[str, Any]:
    """A demo step as the demo's JSON has always shown it (`lab demo --json`, a stable shape:
    key, title, verdict, ok, seconds, evidence, data): not Finding.to_json's."""
    return {"key": f.check, "title": TITLES[f.check], "verdict": f.verdict, "ok": f.ok,
            "seconds": round(float(f.extra["seconds"]), 3), "evidence": f.detail,
            "data": f.extra["data"]}


# (key, title, what a PASS proves) in the order the demo runs them.
PLAN: tuple[tuple[str, str, str], ...] = (
    ("lab_up", "lab up", "a private Tor network runs in namespaces of its own"),
    ("start", "netspectre start",
     "firewall first (fail closed), then netspectre's own tor bootstraps to 100 %"),
    ("myip", "exit check (myip)", "the web server sees a Tor exit's address, not the client's"),
    ("dns", "DNS through Tor", f"{ECHO_NAME} resolves: a plain DNS query went to Tor's DNSPort"),
    ("onion", "onion service", "plain HTTP to a .onion name works (mapped into Tor's virtual "
     "network, then the transparent proxy)"),
    ("leak_tcp", "leak probe: TCP direct",
     "a direct connection to the server's IP is torified: the server sees an exit"),
    ("leak_quic", "leak probe: UDP/QUIC 443", "refused: Tor carries no UDP"),
    ("leak_stun", "leak probe: STUN-like UDP", "refused: WebRTC's way to learn your address"),
    ("leak_icmp", "leak probe: ICMP ping", "refused: ping cannot go through Tor"),
    ("leak_ipv6", "leak probe: IPv6", "refused: IPv6 is off and blocked"),
    ("leak_dns", "leak probe: DNS to the LAN resolver",
     "the LAN resolver never sees the query: Tor answers it"),
    ("leak_dns_tcp", "leak probe: DNS over TCP to the LAN", "refused"),
    ("leak_guest", "leak probe: the guest's traffic",
     "a container/VM routed through the client is refused"),
    ("verify", "netspectre verify",
     "the built-in self-test passes: ruleset = policy, every leak probe refused or torified, "
     "exit check"),
    ("capture", "capture of the client's uplink",
     "every packet that left the client went to a Tor relay's ORPort"),
    ("stop", "netspectre stop",
     "the client is restored: direct traffic flows again (IPv4 and IPv6), IPv6 sysctl and "
     "addresses back"),
    ("lab_down", "lab down", "everything the demo created is gone"),
)
TITLES = {key: title for key, title, _ in PLAN}

Judge = Callable[[Sequence[dict[str, Any]]], tuple[bool, str]]


@dataclass(frozen=True)
class LeakCheck:
    key: str
    ns: str  # "client" or "guest"
    probes: tuple[dict[str, Any], ...]
    judge: Judge


def _short(result: dict[str, Any]) -> str:
    err = str(result.get("error", ""))
    seconds = float(result.get("elapsed", 0))
    took = f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"
    if err.startswith(("TimeoutError", "timeout")):
        return f"no answer in {took}"
    if "errno" in result:
        return f"refused at once ({result['errno']}, {took})"
    return f"refused ({err}, {took})"


def refused(what: Sequence[str]) -> Judge:
    """Every probe must fail to get any answer."""

    def judge(results: Sequence[dict[str, Any]]) -> tuple[bool, str]:
        parts, ok = [], True
        for label, r in zip(what, results, strict=True):
            if "error" in r:
                parts.append(f"{label}: {_short(r)}")
            else:
                ok = False
                parts.append(f"{label}: ANSWERED {_answer(r)}")
        return ok, "; ".join(parts)

    return judge


def _answer(r: dict[str, Any]) -> str:
    if "json" in r:
        return str(r["json"])
    if "answers" in r:
        return f"{r['answers']}"
    if "reply" in r:
        return "(a reply came back)"
    return "(connected)"


def torified_http(info: LabInfo) -> Judge:
    exits = {str(a) for a in info.exit_addresses}
    mine = {str(info.layout.client4), str(info.layout.client6)}

    def judge(results: Sequence[dict[str, Any]]) -> tuple[bool, str]:
        r = results[0]
        answer = r.get("json")
        if not isinstance(answer, dict):
            return False, f"no answer from the web server ({r.get('error') or r})"
        seen, is_tor = str(answer.get("IP")), answer.get("IsTor")
        if seen in exits and is_tor is True:
            return True, (f"the server saw exit {seen} IsTor=true, not the client "
                          f"{info.layout.client4} ({float(r['elapsed']) * 1000:.0f} ms)")
        where = "the CLIENT's own address: a leak" if seen in mine else "not an exit"
        return False, f"the server saw {seen} IsTor={is_tor}: {where}"

    return judge


def via_exit_dns(lay: Layout) -> Judge:
    """A query to the LAN resolver for resolver.test: Tor's answer comes from the exit's
    resolver (its own address), the LAN resolver would answer its own."""

    def judge(results: Sequence[dict[str, Any]]) -> tuple[bool, str]:
        r = results[0]
        answers = r.get("answers")
        if answers == [str(lay.dns4)]:
            return True, (f"query to {lay.resolver4}:53 answered by the exit's resolver "
                          f"({WHOAMI} → {lay.dns4}); the LAN resolver never saw it")
        if answers == [str(lay.resolver4)]:
            return False, f"the LAN resolver {lay.resolver4} answered itself: a DNS leak"
        return False, f"no usable answer: {r.get('error') or r}"

    return judge


def _udp(dst: object, port: int, payload: str) -> dict[str, Any]:
    return {"kind": "udp", "dst": str(dst), "port": port, "payload": payload, "timeout": 2}


# A QUIC v1 long-header Initial's first bytes, and a STUN Binding Request (RFC 5389).
QUIC = "c300000001" + "08" + "00" * 8 + "00" + "00" + "4400" + "00" * 32
STUN = "0001" + "0000" + "2112a442" + "6e657473706563747265"[:24].ljust(24, "0")


def leak_battery(info: LabInfo) -> tuple[LeakCheck, ...]:
    lay = info.layout
    w4, w6 = str(lay.web4), str(lay.web6)
    return (
        LeakCheck("leak_tcp", "client",
                  ({"kind": "http", "url": f"http://{w4}/api/ip", "timeout": 20},),
                  torified_http(info)),
        LeakCheck("leak_quic", "client", (_udp(w4, 443, QUIC),), refused([f"UDP {w4}:443"])),
        LeakCheck("leak_stun", "client", (_udp(w4, 3478, STUN),), refused([f"UDP {w4}:3478"])),
        LeakCheck("leak_icmp", "client", ({"kind": "icmp", "dst": w4, "timeout": 2},),
                  refused([f"ping {w4}"])),
        LeakCheck("leak_ipv6", "client", (
            {"kind": "http", "url": f"http://[{w6}]/api/ip", "timeout": 3},
            _udp(w6, 443, QUIC),
            {"kind": "icmp", "dst": w6, "timeout": 2},
        ), refused([f"TCP [{w6}]:80", f"UDP [{w6}]:443", f"ping {w6}"])),
        LeakCheck("leak_dns", "client",
                  ({"kind": "dns", "server": str(lay.resolver4), "name": WHOAMI, "timeout": 10},),
                  via_exit_dns(lay)),
        LeakCheck("leak_dns_tcp", "client", (
            {"kind": "dns", "server": str(lay.resolver4), "name": ECHO_NAME, "tcp": True,
             "timeout": 3},
        ), refused([f"TCP {lay.resolver4}:53"])),
        LeakCheck("leak_guest", "guest", (
            {"kind": "http", "url": f"http://{w4}/api/ip", "timeout": 3},
            {"kind": "dns", "server": str(lay.resolver4), "name": ECHO_NAME, "timeout": 2},
            {"kind": "icmp", "dst": w4, "timeout": 2},
        ), refused([f"TCP {w4}:80", f"DNS {lay.resolver4}", f"ping {w4}"])),
    )


def judge_myip(info: LabInfo, data: dict[str, Any]) -> tuple[bool, str]:
    ip, is_tor = data.get("IP"), data.get("IsTor")
    exits = {str(a) for a in info.exit_addresses}
    ok = is_tor is True and ip in exits
    text = f"exit {ip} IsTor={str(is_tor).lower()}"
    if not ok:
        text += " (expected one of the lab's exits: " + ", ".join(sorted(exits)) + ")"
    return ok, text


def judge_dns(lay: Layout, echo: dict[str, Any], whoami: dict[str, Any]) -> tuple[bool, str]:
    want = str(lay.web4)
    if echo.get("answers") != [want]:
        return False, f"{ECHO_NAME} → {echo.get('answers') or echo.get('error')} (want {want})"
    ok, how = via_exit_dns(lay)([whoami])
    return ok, f"{ECHO_NAME} → {want}; {how}"


def judge_onion(info: LabInfo, r: dict[str, Any], vnet: str) -> tuple[bool, str]:
    peer = str(r.get("peer", ""))
    name = info.onion[:12] + "…" + info.onion[-14:]
    if r.get("status") != 200:
        return False, f"http://{name}/ → {r.get('error') or r.get('status')}"
    in_vnet = bool(peer) and ipaddress.ip_address(peer) in ipaddress.ip_network(vnet)
    text = (f"HTTP 200 from http://{name}/ (name mapped to {peer} in Tor's virtual network "
            f"{vnet})")
    return in_vnet, text if in_vnet else text.replace("in Tor's", "NOT in Tor's")


def judge_verify(data: dict[str, Any], rc: int) -> tuple[bool, str]:
    """`netspectre --json verify` → (passed, evidence)."""
    rows = data.get("checks") or []
    if not rows:
        return False, str(data.get("error") or f"no report (exit {rc})")
    failed = [r for r in rows if r.get("ok") is False]
    if failed or rc != 0 or not data.get("ok"):
        return False, "; ".join(f"{r['check']}: {r.get('detail', '')}" for r in failed[:3]) or (
            f"exit {rc}")
    outcomes = [r["outcome"] for r in rows if "outcome" in r]
    return True, (f"{len(rows)} checks passed; {len(outcomes)} probes: "
                  f"{outcomes.count('torified')} torified, {outcomes.count('refused')} refused")
