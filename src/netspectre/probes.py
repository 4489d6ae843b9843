"""`verify`'s leak probes: the battery (pure), firing one probe (sockets), judging it (pure).

Each probe sends one real packet of a class that must never leave the machine in the clear
(TCP, DNS to anywhere, QUIC-style UDP, ping, IPv6) to a harmless target: documentation-range
addresses by default, which are never routed on the Internet, so even a probe that escapes
reaches nobody. What happened is judged from what the socket saw *and* from our own counters:

- torified: a TCP connect that completes (only Tor's TransPort can have answered for a
  documentation address) and the `tcp_torified` counter moved; a DNS query answered with an
  address in Tor's VirtualAddrNetwork: Tor maps a `.onion` name there locally (automap), so
  that answer cannot have come from the LAN resolver or from the target;
- refused: the kernel refused it at once (reset, ICMP admin-prohibited, EPERM, or no route
  because IPv6 is off) and one of our `blocked_*` counters moved (when counters are readable);
  DNS over TCP to a LAN resolver must be refused too: the LAN exemption does not cover port 53;
- leak: anything else: no answer within the timeout (the packet left and nobody replied), an
  answer from somewhere else, or a refusal our rules did not count (someone else refused it).
"""

from __future__ import annotations

import base64
import errno
import hashlib
import ipaddress
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from netspectre import dnswire, wire
from netspectre.findings import Finding

TORIFIED, REFUSED, LEAK = "torified", "refused", "leak"
# Refusals the kernel reports for a packet refused on this machine (or never routed).
REFUSALS = {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EACCES,
            errno.EPERM, errno.EADDRNOTAVAIL, errno.ENETDOWN}
NO_ROUTE = {errno.ENETUNREACH, errno.EADDRNOTAVAIL, errno.ENETDOWN}


@dataclass(frozen=True)
class Probe:
    name: str
    kind: str  # tcp | udp | dns | icmp
    family: int  # 4 | 6
    target: str
    port: int
    expect: str  # TORIFIED | REFUSED


@dataclass(frozen=True)
class Observation:
    connected: bool = False  # tcp: handshake completed
    answer: list[str] | None = None  # dns: A records in the reply (None: no reply)
    error: int | None = None  # errno
    at_send: bool = False  # the error came from connect()/send() itself (synchronous)
    timeout: bool = False
    elapsed: float = 0.0


def onion_name() -> str:
    """A well-formed v3 onion address (its key is nobody's): Tor automaps it, nobody else can."""
    key = hashlib.sha256(b"netspectre verify probe").digest()
    check = hashlib.sha3_256(b".onion checksum" + key + b"\x03").digest()[:2]
    return base64.b32encode(key + check + b"\x03").decode().lower() + ".onion"


def battery(target4: str, target6: str, lan_dns: tuple[str, ...], *,
            torify6: bool = False) -> tuple[Probe, ...]:
    """The probes, in order. IPv6 is refused when disabled or blocked; with ipv6 = "torify"
    its TCP and DNS must reach Tor instead (UDP and ICMPv6 stay refused)."""
    six = TORIFIED if torify6 else REFUSED
    probes = [
        Probe(f"TCP to {target4}:80", "tcp", 4, target4, 80, TORIFIED),
        Probe(f"DNS (UDP) to {target4}:53", "dns", 4, target4, 53, TORIFIED),
        *(probe for a in lan_dns for probe in (
            Probe(f"DNS (UDP) to LAN resolver {a}:53", "dns", 4, a, 53, TORIFIED),
            # Tor's DNSPort has no TCP: DNS over TCP to the LAN is refused, never let through.
            Probe(f"DNS (TCP) to LAN resolver {a}:53", "tcp", 4, a, 53, REFUSED))),
        Probe(f"UDP (QUIC) to {target4}:443", "udp", 4, target4, 443, REFUSED),
        Probe(f"ICMP echo to {target4}", "icmp", 4, target4, 0, REFUSED),
        Probe(f"TCP over IPv6 to [{target6}]:80", "tcp", 6, target6, 80, six),
        Probe(f"UDP over IPv6 to [{target6}]:443", "udp", 6, target6, 443, REFUSED),
        Probe(f"DNS (UDP) over IPv6 to [{target6}]:53", "dns", 6, target6, 53, six),
        Probe(f"ICMPv6 echo to {target6}", "icmp", 6, target6, 0, REFUSED),
    ]
    return tuple(probes)


def counted(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]) -> dict[str, int]:
    """Counters that moved between two readings: {name: packets}."""
    moved = {}
    for name, value in after.items():
        delta = value.get("packets", 0) - before.get(name, {}).get("packets", 0)
        if delta > 0:
            moved[name] = delta
    return moved


def judge(probe: Probe, seen: Observation, moved: dict[str, int] | None,
          vnet: ipaddress.IPv4Network) -> tuple[str, str]:
    """(outcome, evidence). moved is None when our counters could not be read."""
    counters = "" if moved is None else (
        "counters " + ", ".join(f"{k} +{v}" for k, v in sorted(moved.items())) if moved
        else "no counter of ours moved")
    blocked = moved is None or any(k.startswith("blocked_") for k in moved)
    if probe.kind == "dns" and seen.answer is not None:
        mapped = [a for a in seen.answer if ipaddress.IPv4Address(a) in vnet]
        if mapped:
            return TORIFIED, f"answered by Tor: {onion_name()[:8]}….onion → {mapped[0]}"
        return LEAK, (f"answered by someone else: {', '.join(seen.answer) or 'no address'} "
                      f"(Tor would map the .onion name into {vnet})")
    if probe.kind == "tcp" and seen.connected:
        if moved is None or "tcp_torified" in moved:
            return TORIFIED, "connection accepted by Tor's TransPort" + (
                f"; {counters}" if counters else "")
        return LEAK, f"connected, but not through our redirect ({counters})"
    if seen.error is not None:
        name = errno.errorcode.get(seen.error, str(seen.error))
        if seen.error in NO_ROUTE and seen.at_send:
            return REFUSED, f"{name}: no route (IPv6 is off); nothing was sent"
        if seen.error == errno.EPERM and seen.at_send:
            return REFUSED, "EPERM: dropped on this machine before it was sent" + (
                f"; {counters}" if counters else "")
        if seen.error in REFUSALS and blocked:
            return REFUSED, f"{name} after {seen.elapsed * 1000:.0f} ms" + (
                f"; {counters}" if counters else "")
        return LEAK, f"{name}, but refused by someone else ({counters or 'no counters'})"
    if seen.timeout:
        return LEAK, f"no answer and no refusal in {seen.elapsed:.1f} s: the packet left"
    return LEAK, "sent without any refusal"


# -- firing (sockets) -----------------------------------------------------------------------


def fire(probe: Probe, timeout: float) -> Observation:
    """Send the probe for real and observe what the socket reports."""
    start = time.monotonic()
    fam = socket.AF_INET if probe.family == 4 else socket.AF_INET6
    try:
        if probe.kind == "tcp":
            return _tcp(fam, probe, timeout, start)
        if probe.kind == "icmp":
            return _icmp(fam, probe, timeout, start)
        return _udp(fam, probe, timeout, start)
    except OSError as exc:  # socket() itself (no IPv6 at all in the kernel)
        return Observation(error=exc.errno, at_send=True, elapsed=time.monotonic() - start)


def elapsed_since(start: float) -> float:
    return time.monotonic() - start


def _tcp(fam: int, probe: Probe, timeout: float, start: float) -> Observation:
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect((probe.target, probe.port))
        except TimeoutError:
            return Observation(timeout=True, elapsed=elapsed_since(start))
        except OSError as exc:
            return Observation(error=exc.errno, at_send=True, elapsed=elapsed_since(start))
        return Observation(connected=True, elapsed=elapsed_since(start))


def _udp(fam: int, probe: Probe, timeout: float, start: float) -> Observation:
    qid = int.from_bytes(os.urandom(2), "big")
    payload = (dnswire.query(onion_name(), qid) if probe.kind == "dns"
               else b"\x0d" + os.urandom(31))  # QUIC-ish
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.connect((probe.target, probe.port))
            s.send(payload)
        except OSError as exc:
            return Observation(error=exc.errno, at_send=True, elapsed=elapsed_since(start))

        def reply(data: bytes) -> Observation | None:
            if probe.kind != "dns":
                return Observation(answer=[], elapsed=elapsed_since(start))
            parsed = dnswire.parse(data, qid)
            return None if parsed is None else Observation(
                answer=[a for a in parsed.answers if ":" not in a], elapsed=elapsed_since(start))

        return _await(s, start, timeout, reply)


def _icmp(fam: int, probe: Probe, timeout: float, start: float) -> Observation:
    v6 = fam == socket.AF_INET6
    proto = socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP
    ident = int.from_bytes(os.urandom(2), "big")
    body = wire.echo_request(probe.family, ident, b"netspectre verify")
    with socket.socket(fam, socket.SOCK_RAW, proto) as s:
        try:
            s.connect((probe.target, 0))
            s.send(body)
        except OSError as exc:
            return Observation(error=exc.errno, at_send=True, elapsed=elapsed_since(start))

        def reply(data: bytes) -> Observation | None:
            said = wire.classify(wire.icmp_message(data, probe.family), ident)
            if said is wire.Echo.REPLY:
                return Observation(answer=[], elapsed=elapsed_since(start))  # echo reply
            if said is wire.Echo.UNREACHABLE:  # from wherever
                return Observation(error=errno.EHOSTUNREACH, elapsed=elapsed_since(start))
            return None

        return _await(s, start, timeout, reply)


def _await(s: socket.socket, start: float, timeout: float,
           reply: Callable[[bytes], Observation | None]) -> Observation:
    """Receive until reply() recognises a datagram, an error is reported, or time is up."""
    deadline = start + timeout
    while True:
        s.settimeout(max(deadline - time.monotonic(), 0.001))
        try:
            data = s.recv(4096)
        except TimeoutError:
            return Observation(timeout=True, elapsed=elapsed_since(start))
        except OSError as exc:
            return Observation(error=exc.errno, elapsed=elapsed_since(start))
        seen = reply(data)
        if seen is not None:
            return seen


Counters = dict[str, dict[str, int]]


def run(probes: tuple[Probe, ...], timeout: float, read_counters: Callable[[], Counters],
        vnet: ipaddress.IPv4Network) -> list[Finding]:
    """Fire each probe with a counter reading around it; one result row per probe."""
    rows: list[Finding] = []
    for probe in probes:
        before = read_safely(read_counters)
        seen = fire(probe, timeout)
        after = read_safely(read_counters)
        moved = None if before is None or after is None else counted(before, after)
        outcome, evidence = judge(probe, seen, moved, vnet)
        rows.append(Finding(
            probe.name, outcome == probe.expect, f"{outcome}: {evidence}",
            "" if outcome == probe.expect else _fix(probe, outcome),
            extra={"expected": probe.expect, "outcome": outcome},
        ))
    return rows


def read_safely(read_counters: Callable[[], Counters]) -> Counters | None:
    from netspectre.errors import Error

    try:
        return read_counters() or None
    except Error:
        return None


def _fix(probe: Probe, outcome: str) -> str:
    if outcome == LEAK:
        return "run `sudo netspectre restart` to re-apply the ruleset, then verify again"
    if probe.expect == TORIFIED:
        return "Tor is not answering: `sudo netspectre status`, then `sudo netspectre restart`"
    return "see `sudo netspectre doctor`"
