"""A packet capture on an interface of a lab namespace (tcpdump, started through system.spawn),
and the verdict on it: every IP packet on the client's uplink must be between the client and a
Tor relay's ORPort. The verdict is pure, so a failing capture can be shown on made-up packets.
"""

from __future__ import annotations

import ipaddress
import json
import os
import select
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from netspectre import system
from netspectre.errors import Error
from netspectre.lab.network import ns_argv
from netspectre.lab.pcap import ICMPV6, TCP, Packet, read_pcap

Endpoint = tuple[str, int]  # (address, port)


@dataclass(frozen=True)
class Verdict:
    ok: bool
    packets: int  # IP packets the client sent, judged
    received: int  # frames the client received: not its traffic, not judged
    non_ip: int  # ARP and other link-layer frames the client sent: reach no one beyond the link
    bytes: int  # sent
    by_relay: dict[str, int]  # "auth1 203.0.113.11:9001" -> packets sent to it
    after_stop: int  # IPv6 link-local housekeeping once `stop` had re-enabled IPv6
    offending: int
    examples: tuple[str, ...]  # the first offending packets, readable
    seconds: float  # first to last packet sent

    @property
    def summary(self) -> str:
        if self.ok:
            return (f"{self.packets} packets sent ({self.bytes / 1e6:.1f} MB) in "
                    f"{self.seconds:.1f} s, every one to a relay's ORPort")
        if not self.packets:
            return "no IP packet captured: the capture cannot vouch for anything"
        return (f"{self.offending} of {self.packets} packets sent NOT to a relay's ORPort, "
                "e.g. " + "; ".join(self.examples))


def _housekeeping(p: Packet) -> bool:
    """Router solicitation / MLD / DAD: what the kernel sends when IPv6 comes back on."""
    if p.version != 6 or p.proto != ICMPV6 or p.src is None or p.dst is None:
        return False
    src, dst = ipaddress.IPv6Address(p.src), ipaddress.IPv6Address(p.dst)
    return (src.is_unspecified or src.is_link_local) and dst in _LINK_MULTICAST


_LINK_MULTICAST = ipaddress.IPv6Network("ff02::/16")


def judge(packets: Iterable[Packet], relays: Mapping[Endpoint, str], *, own_mac: str,
          stopped_at: float | None = None, examples: int = 3) -> Verdict:
    """Judge what the client (own_mac) sent. relays maps (address, ORPort) to a relay's name;
    a packet passes when it is TCP to one of them. Anything else (UDP, ICMP, IPv6, TCP to
    another port) fails, except IPv6 link-local housekeeping after stopped_at (the wall-clock
    time `stop` began: it re-enables IPv6 after it has removed the rules)."""
    by_relay: Counter[str] = Counter()
    bad: list[Packet] = []
    judged = non_ip = received = size = after = 0
    first = last = None
    for p in packets:
        if p.src_mac != own_mac:
            received += 1
            continue
        if not p.is_ip:
            non_ip += 1
            continue
        judged += 1
        size += p.length
        first = p.ts if first is None else first
        last = p.ts
        name = None
        if p.proto == TCP and p.dst is not None and p.dport is not None:
            name = relays.get((p.dst, p.dport))
        if name is not None:
            by_relay[name] += 1
        elif stopped_at is not None and p.ts >= stopped_at and _housekeeping(p):
            after += 1
        else:
            bad.append(p)
    return Verdict(
        ok=judged > 0 and not bad,
        packets=judged,
        received=received,
        non_ip=non_ip,
        bytes=size,
        by_relay=dict(sorted(by_relay.items())),
        after_stop=after,
        offending=len(bad),
        examples=tuple(describe(p) for p in bad[:examples]),
        seconds=round((last or 0.0) - (first or 0.0), 3),
    )


def mac(ns: str, iface: str) -> str:
    """The interface's MAC address, as the pcap reader writes it."""
    out = system.run(["ip", "-j", "-n", ns, "link", "show", "dev", iface]).stdout
    return str(json.loads(out)[0]["address"]).lower()


def describe(p: Packet) -> str:
    proto = {6: "TCP", 17: "UDP", 1: "ICMP", 58: "ICMPv6"}.get(p.proto or -1, f"proto {p.proto}")
    def at(addr: str | None, port: int | None) -> str:
        host = f"[{addr}]" if addr and ":" in addr else str(addr)
        return host if port is None else f"{host}:{port}"
    return f"{proto} {at(p.src, p.sport)} > {at(p.dst, p.dport)}"


def hits(packets: Iterable[Packet], target: str, port: int | None = None) -> int:
    """How many captured packets went to target (and port, when given)."""
    return sum(1 for p in packets if p.dst == target and (port is None or p.dport == port))


class Capture:
    """tcpdump writing a pcap file, started and stopped by us (by its own pid)."""

    def __init__(self, ns: str, iface: str, path: Path, *, snaplen: int = 128) -> None:
        self.ns, self.iface, self.path, self.snaplen = ns, iface, path, snaplen
        self.proc: subprocess.Popen[bytes] | None = None
        self.said = b""
        self.ended_early: int | None = None  # tcpdump's exit status if it ended before stop()

    def start(self, timeout: float = 10.0) -> None:
        tcpdump = system.require("tcpdump")
        # -Z root: write the file as root (the lab directory is root's 0700); -U: per packet.
        argv = [tcpdump, "-n", "-U", "--immediate-mode", "-Z", "root", "-i", self.iface,
                "-s", str(self.snaplen), "-w", str(self.path)]
        self.proc = system.spawn(ns_argv(self.ns, argv), stderr=subprocess.PIPE)
        assert self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        deadline = time.monotonic() + timeout
        while b"listening on" not in self.said:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                self.stop()
                raise Error(f"tcpdump did not start on {self.iface} in {self.ns}: "
                            f"{self.said.decode(errors='replace').strip() or 'no output'}")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 4096)
                self.said += chunk
                if not chunk:
                    time.sleep(0.01)

    def stop(self) -> list[Packet]:
        """Stop tcpdump (it flushes on SIGINT) and read what it wrote."""
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is not None:
                self.ended_early = proc.returncode
            else:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if proc.stderr is not None:
                proc.stderr.close()
        try:
            return read_pcap(self.path.read_bytes())
        except FileNotFoundError:
            return []
