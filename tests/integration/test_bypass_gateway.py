"""Issue 10 x issue 11, against the real kernel: with a bypass account, a `[gateway]` and
`ipv6 = "torify"` in one config, the bypass account still goes direct over IPv4 and IPv6 (its
return precedes the torify IPv6 redirect), while root's IPv6 is torified and the gateway's
client is torified as before. Stand-ins for tor's listeners ([::1] for torify, 0.0.0.0/[::]
for the gateway) run as tor's user, as in test_torify.py and test_gateway.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.netns import ICMPV6, TCP, UDP, Packet
from tests.support.topology import (
    BACKENDS,
    CLIENT4,
    CLIENT6,
    DNS_OUT,
    DNS_PORT,
    LAN,
    OUT_ANSWER,
    TRANS_PORT,
    WEB,
    WEB6,
    Topology,
    assert_no_leak,
    outgoing,
    show,
)

pytestmark = pytest.mark.root

GW_TRANS, GW_DNS = 9041, 9054
TOR6_ANSWER = "203.0.113.251"
VNET6 = "2001:db8:ff::/48"
LAN6 = "2001:db8:1::/64"


def combined_config(t: Topology, backend: str) -> Path:
    path = t.config(backend, name=f"bypass-gateway-{backend}.toml", ipv6="torify",
                    lan=[LAN, LAN6])
    text = path.read_text().replace("[tor]\n", f'[tor]\nvirtual_network6 = "{VNET6}"\n', 1)
    path.write_text(text + f"bypass_users = {json.dumps(['nobody'])}\n"
                    f'[gateway]\ninterfaces = ["gw0"]\ntrans_port = {GW_TRANS}\n'
                    f"dns_port = {GW_DNS}\n")
    return path


@pytest.fixture(scope="module")
def both(topo: Topology) -> Topology:
    topo.tor.call("serve_tcp", addr="::1", port=TRANS_PORT, role="tor6", fake_tor=True)
    topo.tor.call("serve_udp", addr="::1", port=DNS_PORT, role="tor-dns6", answer=TOR6_ANSWER)
    for addr in ("0.0.0.0", "::"):
        topo.tor.call("serve_tcp", addr=addr, port=GW_TRANS, role="gw-tor", fake_tor=True)
        topo.tor.call("serve_udp", addr=addr, port=GW_DNS, role="gw-dns", answer="203.0.113.252")
    # A real resolver on the internet's IPv6 side: a bypassed query over IPv6 reaches it.
    topo.servers.call("serve_udp", addr=WEB6, port=53, role="out-dns6", answer=OUT_ANSWER)
    return topo


def _allowed(p: Packet) -> bool:
    """nobody's direct probes (TCP 443 to WEB, TCP 80 and DNS to WEB6, DNS to DNS_OUT) and
    ND."""
    nd = p.proto == ICMPV6 and p.payload[:1] in (b"\x85", b"\x86", b"\x87", b"\x88")
    return nd or (p.dst == WEB and p.proto == TCP and p.dport == 443) or (
        p.dst == WEB6 and ((p.proto == TCP and p.dport == 80)
                           or (p.proto == UDP and p.dport == 53))) or (
        p.dst == DNS_OUT and p.proto == UDP and p.dport == 53)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_bypass_users_ipv6_goes_direct_with_torify_and_a_gateway(both: Topology,
                                                                    backend: str) -> None:
    t = both
    try:
        t.start(combined_config(t, backend))
        status = t.netspectre(None, "status").data
        assert status["policy"]["ipv6"] == "torify", status["policy"]
        assert status["policy"]["bypass_users"] == [{"name": "nobody", "uid": 65534}]
        assert status["gateway"]["interfaces"] == {"gw0": True}, status["gateway"]
        cap = t.capture()
        got = t.probe({
            "nobody-tcp": (t.nobody, "tcp", {"dst": WEB, "port": 443}),
            "nobody-tcp6": (t.nobody, "tcp", {"dst": WEB6, "port": 80}),
            "nobody-dns": (t.nobody, "dns", {"dst": DNS_OUT, "name": "direct.example"}),
            "nobody-dns6": (t.nobody, "dns", {"dst": WEB6, "name": "direct6.example"}),
            "root-tcp6": (t.root, "tcp", {"dst": WEB6, "port": 80}),
            "root-dns6": (t.root, "dns", {"dst": WEB6, "name": "aaaa.example"}),
            "guest-tcp": (t.guest_agent, "tcp", {"dst": WEB, "port": 80}),
            "guest-tcp6": (t.guest_agent, "tcp", {"dst": WEB6, "port": 80}),
        })
        packets = t.finish(cap)
        # The bypass account: direct, both families, answered by the real servers ...
        assert got["nobody-tcp"]["banner"] == f"SERVER {WEB} 443", got["nobody-tcp"]
        assert got["nobody-tcp6"].get("banner") == f"SERVER {WEB6} 80", got["nobody-tcp6"]
        assert got["nobody-dns"]["answer"] == OUT_ANSWER, got["nobody-dns"]
        assert got["nobody-dns6"]["answer"] == OUT_ANSWER, got["nobody-dns6"]
        # ... root's IPv6 torified to the [::1] stand-ins (the control: torify is in force) ...
        assert got["root-tcp6"]["banner"] == f"TOR {WEB6} 80", got["root-tcp6"]
        assert got["root-dns6"]["answer"] == TOR6_ANSWER, got["root-dns6"]
        # ... and the gateway's client torified by its own listeners.
        assert got["guest-tcp"]["banner"] == f"TOR {WEB} 80", got["guest-tcp"]
        assert got["guest-tcp6"]["banner"] == f"TOR {WEB6} 80", got["guest-tcp6"]
        out = outgoing(packets)
        for proto, dst, dport, src in ((TCP, WEB, 443, CLIENT4), (TCP, WEB6, 80, CLIENT6),
                                       (UDP, WEB6, 53, CLIENT6)):
            seen = [p for p in out if p.proto == proto and p.dst == dst and p.dport == dport]
            assert seen and all(p.src == src for p in seen), (dst, dport, show(out))
        assert_no_leak(packets, allowed=_allowed)
    finally:
        t.reset()
