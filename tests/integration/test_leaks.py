"""Issue 2, point 4 a–i: each property tried against the real kernel, judged by a capture on
the client's uplink. A positive control proves the same probes do leave when we are off."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.support.netns import ICMP, ICMPV6, TCP, UDP, Packet
from tests.support.topology import (
    BACKENDS,
    CLIENT4,
    DNS_OUT,
    GW4,
    LAN,
    LAN_ANSWER,
    LAN_DNS,
    LAN_HOST,
    OUT_ANSWER,
    TOR_ANSWER,
    VNET_HOST,
    WEB,
    WEB6,
    Topology,
    assert_no_leak,
    outgoing,
    refused_fast,
    show,
)

pytestmark = pytest.mark.root

FIN, SYN, RST, PSH, ACK, URG = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
PORTS = itertools.count(7100)  # a fresh listening port per test (listeners outlive tests)


@dataclass(frozen=True)
class Probe:
    name: str
    agent: str  # root | nobody | guest
    op: str
    args: dict[str, Any]
    matches: Callable[[Packet], bool] = field(compare=False)


def _to(dst: str, proto: int, dport: int | None = None, flags: int | None = None
        ) -> Callable[[Packet], bool]:
    return lambda p: (p.dst == dst and p.proto == proto
                      and (dport is None or p.dport == dport)
                      and (flags is None or p.tcp_flags == flags))


BATTERY = (
    Probe("tcp-root", "root", "tcp", {"dst": WEB, "port": 80}, _to(WEB, TCP, 80)),
    Probe("tcp-nobody", "nobody", "tcp", {"dst": WEB, "port": 443}, _to(WEB, TCP, 443)),
    Probe("quic", "root", "udp", {"dst": WEB, "port": 443}, _to(WEB, UDP, 443)),
    Probe("stun-nobody", "nobody", "udp", {"dst": WEB, "port": 3478}, _to(WEB, UDP, 3478)),
    Probe("icmp", "root", "icmp", {"dst": WEB}, _to(WEB, ICMP)),
    Probe("gre", "root", "rawip", {"dst": WEB, "proto": 47}, _to(WEB, 47)),
    Probe("dns-out", "root", "dns", {"dst": DNS_OUT, "name": "out.example"},
          _to(DNS_OUT, UDP, 53)),
    Probe("dns-lan", "nobody", "dns", {"dst": LAN_DNS, "name": "lan.example"},
          _to(LAN_DNS, UDP, 53)),
    Probe("dns-lan-tcp", "root", "dns", {"dst": LAN_DNS, "name": "tcp.example", "tcp": True},
          _to(LAN_DNS, TCP, 53)),
    Probe("tcp6", "root", "tcp", {"dst": WEB6, "port": 80}, _to(WEB6, TCP, 80)),
    Probe("udp6", "root", "udp", {"dst": WEB6, "port": 443}, _to(WEB6, UDP, 443)),
    Probe("icmp6", "root", "icmp", {"dst": WEB6}, _to(WEB6, ICMPV6)),
    Probe("syn-fin", "root", "tcpflags", {"dst": WEB, "port": 80, "flags": SYN | FIN},
          _to(WEB, TCP, 80, SYN | FIN)),
    Probe("syn-rst", "root", "tcpflags", {"dst": WEB, "port": 80, "flags": SYN | RST},
          _to(WEB, TCP, 80, SYN | RST)),
    Probe("null", "root", "tcpflags", {"dst": WEB, "port": 80, "flags": 0}, _to(WEB, TCP, 80, 0)),
    Probe("xmas", "root", "tcpflags", {"dst": WEB, "port": 80, "flags": FIN | PSH | URG},
          _to(WEB, TCP, 80, FIN | PSH | URG)),
    Probe("guest-tcp", "guest", "tcp", {"dst": WEB, "port": 80, "timeout": 0.5},
          _to(WEB, TCP, 80)),
    Probe("guest-udp", "guest", "udp", {"dst": WEB, "port": 3478, "timeout": 0.5},
          _to(WEB, UDP, 3478)),
    Probe("guest-icmp", "guest", "icmp", {"dst": WEB, "timeout": 0.5}, _to(WEB, ICMP)),
    Probe("guest-tcp6", "guest", "tcp", {"dst": WEB6, "port": 80, "timeout": 0.5},
          _to(WEB6, TCP, 80)),
)


def run_battery(t: Topology, probes: tuple[Probe, ...] = BATTERY) -> dict[str, Any]:
    agents = {"root": t.root, "nobody": t.nobody, "guest": t.guest_agent}
    return t.probe({p.name: (agents[p.agent], p.op, p.args) for p in probes})


def active(t: Topology, backend: str, **config: Any) -> None:
    t.start(t.config(backend, **config))


# --- positive control ------------------------------------------------------------------------


def _assert_battery_leaves(t: Topology) -> None:
    cap = t.capture()
    results = run_battery(t)
    packets = t.finish(cap)
    out = outgoing(packets)
    silent = [p.name for p in BATTERY if not any(p.matches(x) for x in out)]
    assert not silent, f"probes not seen on the uplink (detector blind?): {silent}\n{show(out)}"
    assert results["tcp-root"]["banner"] == f"SERVER {WEB} 80"
    assert results["tcp6"]["banner"] == f"SERVER {WEB6} 80"
    assert results["guest-tcp"]["banner"] == f"SERVER {WEB} 80"
    assert results["dns-lan"]["answer"] == LAN_ANSWER
    assert results["dns-out"]["answer"] == OUT_ANSWER
    assert results["icmp"].get("reply") is True


def test_positive_control(clean: Topology) -> None:
    """netspectre never started: every probe of the battery is seen leaving."""
    _assert_battery_leaves(clean)


@pytest.mark.parametrize("backend", BACKENDS)
def test_positive_control_after_stop(clean: Topology, backend: str) -> None:
    """After start + stop the same probes leave again: stop really lifted everything."""
    cfg = clean.config(backend)
    clean.start(cfg)
    clean.stop(cfg)
    _assert_battery_leaves(clean)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("allow_lan", [True, False], ids=["allow_lan", "block_lan"])
def test_battery_never_leaves_while_active(clean: Topology, backend: str,
                                           allow_lan: bool) -> None:
    active(clean, backend, allow_lan=allow_lan)
    cap = clean.capture()
    results = run_battery(clean)
    packets = clean.finish(cap)
    assert_no_leak(packets)
    assert results["tcp-root"]["banner"] == f"TOR {WEB} 80"
    assert results["tcp-nobody"]["banner"] == f"TOR {WEB} 443"
    assert results["dns-out"]["answer"] == TOR_ANSWER
    assert results["dns-lan"]["answer"] == TOR_ANSWER


# --- 4a: every new TCP connection of every local user except Tor's goes to TransPort ---------


@pytest.mark.parametrize("backend", BACKENDS)
def test_4a_tcp_goes_to_transport(clean: Topology, backend: str) -> None:
    t = clean
    active(t, backend)
    t.tor.call("events")
    cap = t.capture()
    got = t.probe({
        ("root", 80): (t.root, "tcp", {"dst": WEB, "port": 80, "data": "hello"}),
        ("root", 8080): (t.root, "tcp", {"dst": WEB, "port": 8080}),
        ("nobody", 443): (t.nobody, "tcp", {"dst": WEB, "port": 443, "data": "hi"}),
        ("nobody", 22): (t.nobody, "tcp", {"dst": WEB, "port": 22}),
    })
    packets = t.finish(cap)
    for (who, port), result in got.items():
        assert result["banner"] == f"TOR {WEB} {port}", (who, result)
    assert got[("root", 80)]["echo"] == "ECHO hello"
    seen = {tuple(e["orig"]) for e in t.tor.call("events")["events"] if e["event"] == "connect"}
    assert {(WEB, 80), (WEB, 8080), (WEB, 443), (WEB, 22)} <= seen
    assert_no_leak(packets)


# --- 4b: DNS never leaves directly, to the LAN included --------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("allow_lan", [True, False], ids=["allow_lan", "block_lan"])
def test_4b_dns(clean: Topology, backend: str, allow_lan: bool) -> None:
    t = clean
    active(t, backend, allow_lan=allow_lan)
    t.servers.call("events")
    cap = t.capture()
    udp = t.probe({
        "root-out": (t.root, "dns", {"dst": DNS_OUT, "name": "a.example"}),
        "root-lan": (t.root, "dns", {"dst": LAN_DNS, "name": "b.example"}),
        "nobody-out": (t.nobody, "dns", {"dst": DNS_OUT, "name": "c.example"}),
        "nobody-lan": (t.nobody, "dns", {"dst": LAN_DNS, "name": "d.example"}),
        "tcp-lan": (t.root, "dns", {"dst": LAN_DNS, "name": "e.example", "tcp": True}),
    })
    tcp_lan = udp.pop("tcp-lan")
    packets = t.finish(cap)
    for who, result in udp.items():
        assert result["answer"] == TOR_ANSWER, (who, result)
    dns_seen = [e for e in t.servers.call("events")["events"] if e["role"].endswith("dns")]
    assert dns_seen == [], f"a real resolver was reached: {dns_seen}"
    assert_no_leak(packets)
    if allow_lan:
        assert refused_fast(tcp_lan), f"TCP 53 to the LAN not rejected fast: {tcp_lan}"
    else:  # the LAN is not exempt: TCP 53 to it goes to Tor like any TCP, or is refused
        assert tcp_lan.get("answer") != LAN_ANSWER, tcp_lan


# --- 4c: TCP to the virtual network goes to TransPort even when a LAN range contains it ------


@pytest.mark.parametrize("backend", BACKENDS)
def test_4c_virtual_network_beats_lan(clean: Topology, backend: str) -> None:
    t = clean
    active(t, backend, lan=["10.0.0.0/8", LAN])  # 10/8 only as a config value, never a target
    cap = t.capture()
    root = t.root.call("tcp", dst=VNET_HOST, port=80)
    nobody = t.nobody.call("tcp", dst=VNET_HOST, port=443)
    packets = t.finish(cap)
    assert root["banner"] == f"TOR {VNET_HOST} 80", root
    assert nobody["banner"] == f"TOR {VNET_HOST} 443", nobody
    to_10 = [p for p in packets if p.in_net("10.0.0.0/8")]
    assert not to_10, f"packets to 10/8 on the wire:\n{show(to_10)}"
    assert_no_leak(packets)


# --- 4d: the LAN goes direct, or is blocked with allow_lan = false ---------------------------


def _lan_probes(t: Topology) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    got = t.probe({
        "tcp": (t.nobody, "tcp", {"dst": LAN_HOST, "port": 80}),
        "udp": (t.root, "udp", {"dst": LAN_HOST, "port": 3478}),
        "ping": (t.root, "icmp", {"dst": LAN_HOST}),
    })
    return got["tcp"], got["udp"], got["ping"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_4d_lan_direct_when_allowed(clean: Topology, backend: str) -> None:
    t = clean
    active(t, backend, allow_lan=True)
    cap = t.capture()
    tcp, udp, ping = _lan_probes(t)
    packets = t.finish(cap)
    assert tcp["banner"] == f"SERVER {LAN_HOST} 80", tcp
    assert udp["reply"] == "ECHO probe", udp
    assert ping.get("reply") is True, ping
    lan = [p for p in outgoing(packets) if p.dst == LAN_HOST]
    assert {p.proto for p in lan} == {TCP, UDP, ICMP}, show(lan)
    assert_no_leak(packets, allowed=lambda p: p.in_net(LAN))


@pytest.mark.parametrize("backend", BACKENDS)
def test_4d_lan_blocked_when_not_allowed(clean: Topology, backend: str) -> None:
    t = clean
    active(t, backend, allow_lan=False)
    cap = t.capture()
    tcp, udp, ping = _lan_probes(t)
    packets = t.finish(cap)
    assert tcp.get("banner") != f"SERVER {LAN_HOST} 80", tcp
    assert refused_fast(udp), udp
    assert refused_fast(ping), ping
    assert_no_leak(packets)


# --- 4e: everything else is refused fast ----------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("ipv6", ["block", "disable"])
def test_4e_refused_fast(clean: Topology, backend: str, ipv6: str) -> None:
    t = clean
    active(t, backend, ipv6=ipv6)
    if ipv6 == "disable":
        assert t.client.sysctl("net.ipv6.conf.all.disable_ipv6") == "1"
    cap = t.capture()
    results = t.probe({
        "quic": (t.root, "udp", {"dst": WEB, "port": 443}),
        "stun": (t.nobody, "udp", {"dst": WEB, "port": 3478}),
        "icmp": (t.root, "icmp", {"dst": WEB}),
        "gre": (t.root, "rawip", {"dst": WEB, "proto": 47}),
        "proto-253": (t.root, "rawip", {"dst": WEB, "proto": 253}),
        "udp6": (t.root, "udp", {"dst": WEB6, "port": 443}),
        "icmp6": (t.root, "icmp", {"dst": WEB6}),
        "tcp6-root": (t.root, "tcp", {"dst": WEB6, "port": 80}),
        "tcp6-nobody": (t.nobody, "tcp", {"dst": WEB6, "port": 443}),
    })
    packets = t.finish(cap)
    assert_no_leak(packets)
    slow = {k: v for k, v in results.items() if not refused_fast(v)}
    assert not slow, f"not refused fast (< 0.5 s, with an error): {slow}"


# --- 4f: a connection opened before `start` cannot send one more packet ----------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_4f_flows_opened_before_start(clean: Topology, backend: str) -> None:
    t = clean
    cap = t.capture()
    opened = {
        "tcp-root": t.root.call("open", id="f-tcp", kind="tcp", dst=WEB, port=80),
        "udp-root": t.root.call("open", id="f-udp", kind="udp", dst=WEB, port=3478),
        "tcp-nobody": t.nobody.call("open", id="f-tcp", kind="tcp", dst=WEB, port=443),
    }
    assert opened["tcp-root"]["banner"] == f"SERVER {WEB} 80", opened
    assert t.root.call("send", id="f-tcp", data="before")["reply"] == "ECHO before"
    assert opened["udp-root"]["reply"] == "ECHO open", opened
    t.servers.call("events")
    t.start(t.config(backend))
    started = time.time()
    after = t.probe({
        "tcp-root": (t.root, "send", {"id": "f-tcp", "data": "after"}),
        "udp-root": (t.root, "send", {"id": "f-udp", "data": "after"}),
        "tcp-nobody": (t.nobody, "send", {"id": "f-tcp", "data": "after"}),
    })
    t.root.call("close", id="f-tcp")
    t.root.call("close", id="f-udp")
    t.nobody.call("close", id="f-tcp", linger0=True)
    packets = t.finish(cap)
    for who, result in after.items():
        assert result.get("error"), f"{who}: pre-existing flow still talks: {result}"
    got = [e for e in t.servers.call("events")["events"] if e.get("data") == "after"]
    assert not got, f"the server received data sent after start: {got}"
    before = outgoing(packets, until=started)
    assert any(p.dst == WEB for p in before), "no pre-start traffic seen: detector blind?"
    assert_no_leak(packets, since=started)


# --- 4g: forwarded traffic never leaves ------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_4g_forwarded_traffic(clean: Topology, backend: str) -> None:
    t = clean
    active(t, backend)
    cap = t.capture()
    g = t.guest_agent
    results = t.probe({
        "tcp": (g, "tcp", {"dst": WEB, "port": 80, "timeout": 0.5}),
        "tcp-lan": (g, "tcp", {"dst": LAN_HOST, "port": 80, "timeout": 0.5}),
        "udp": (g, "udp", {"dst": WEB, "port": 3478, "timeout": 0.5}),
        "dns": (g, "dns", {"dst": DNS_OUT, "name": "guest.example", "timeout": 0.5}),
        "icmp": (g, "icmp", {"dst": WEB, "timeout": 0.5}),
        "tcp6": (g, "tcp", {"dst": WEB6, "port": 80, "timeout": 0.5}),
    })
    packets = t.finish(cap)
    assert_no_leak(packets)
    reached = {k: v for k, v in results.items() if not v.get("error")}
    assert not reached, f"guest probes got answers: {reached}"


# --- 4h: INVALID packets and impossible TCP flags never leave (the FIN/RST leak) -------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_4h_invalid_and_crafted(clean: Topology, backend: str) -> None:
    t = clean
    active(t, backend)
    cap = t.capture()
    impossible = (SYN | FIN, SYN | RST, 0, FIN | PSH | URG, FIN, FIN | RST, PSH, URG,
                  ACK | RST, ACK | FIN)
    for dst in (WEB, LAN_HOST):  # the LAN is exempt, but not for packets like these
        for flags in impossible:
            t.root.call("tcpflags", dst=dst, port=80, flags=flags)
    t.root.call("tcpflags", dst=WEB, port=80, flags=ACK)  # mid-stream, no conntrack entry
    packets = t.finish(cap)
    assert_no_leak(packets)


@pytest.mark.parametrize("backend", BACKENDS)
def test_4h_conntrack_deleted_fin_rst_leak(clean: Topology, backend: str) -> None:
    """A torified flow whose conntrack entry vanished must not finish in the clear."""
    t = clean
    active(t, backend)
    cap = t.capture()
    sports = []
    for id in ("ct-data", "ct-fin", "ct-rst"):
        opened = t.root.call("open", id=id, kind="tcp", dst=WEB, port=80)
        assert opened["banner"] == f"TOR {WEB} 80", opened
        sports.append(str(opened["local"][1]))
    for sport in sports:
        t.client.run(["conntrack", "-D", "-p", "tcp", "--orig-dst", WEB, "--sport", sport])
        listing = t.client.run(["conntrack", "-L", "-p", "tcp", "--sport", sport], check=False)
        assert WEB not in listing.stdout, listing.stdout
    t.root.call("send", id="ct-data", data="after conntrack -D")
    t.root.call("close", id="ct-data", linger0=True)
    t.root.call("close", id="ct-fin")  # FIN (retransmitted until it gives up)
    t.root.call("close", id="ct-rst", linger0=True)  # RST
    packets = t.finish(cap)
    assert_no_leak(packets)


# --- 4i: Tor's own user and loopback pass ----------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_4i_tor_user_and_loopback_pass(clean: Topology, backend: str) -> None:
    t = clean
    active(t, backend)
    cap = t.capture()
    got = t.probe({
        "tcp": (t.tor, "tcp", {"dst": WEB, "port": 80, "data": "from tor"}),
        "udp": (t.tor, "udp", {"dst": WEB, "port": 3478}),
        "dns": (t.tor, "dns", {"dst": DNS_OUT, "name": "tor.example"}),
    })
    tor_tcp, tor_udp, tor_dns = got["tcp"], got["udp"], got["dns"]
    packets = t.finish(cap)
    assert tor_tcp["banner"] == f"SERVER {WEB} 80", tor_tcp
    assert tor_tcp["echo"] == "ECHO from tor"
    assert tor_udp["reply"] == "ECHO probe", tor_udp
    assert tor_dns["answer"] == OUT_ANSWER, tor_dns
    assert_no_leak(packets, allowed=lambda p: p.dst in (WEB, DNS_OUT))
    port = next(PORTS)
    t.root.call("serve_tcp", addr="127.0.0.1", port=port, role="lo")
    t.root.call("serve_tcp", addr="::1", port=port, role="lo6")
    assert t.nobody.call("tcp", dst="127.0.0.1", port=port)["banner"] == f"SERVER 127.0.0.1 {port}"
    assert t.nobody.call("tcp", dst="::1", port=port)["banner"] == f"SERVER ::1 {port}"
    assert t.root.call("dns", dst="127.0.0.1", port=9053, name="lo.example")["answer"] \
        == TOR_ANSWER


# --- incoming --------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("incoming", ["block", "allow"])
@pytest.mark.parametrize("peer", [GW4, WEB], ids=["from-lan", "from-internet"])
def test_incoming(clean: Topology, backend: str, incoming: str, peer: str) -> None:
    t = clean
    port = next(PORTS)
    t.root.call("listen", addr="0.0.0.0", port=port)
    connect: dict[str, Any] = {"dst": CLIENT4, "port": port, "bind": peer, "timeout": 0.5}
    assert t.servers.call("tcp", **connect)["banner"] == f"SERVER {CLIENT4} {port}"
    active(t, backend, incoming=incoming)
    cap = t.capture()
    result = t.servers.call("tcp", **connect)
    packets = t.finish(cap)
    if incoming == "block":
        assert result.get("error"), f"a new inbound connection was accepted: {result}"
        assert_no_leak(packets)
    else:
        assert result.get("banner") == f"SERVER {CLIENT4} {port}", \
            f"incoming = \"allow\" but a connection from {peer} was not accepted: {result}"
