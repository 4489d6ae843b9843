"""Issue 2, point 6: other software's rules (a foreign nft table, iptables-nft and
iptables-legacy rules, docker-style NAT chains) are byte-for-byte the same after `stop`,
rules added while we are active survive it, and nobody's OUTPUT DNAT claims our connections."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator

import pytest

from tests.support.netns import missing_tools
from tests.support.topology import (
    BACKENDS,
    DNAT_TARGET,
    WEB,
    WEB6,
    Topology,
    assert_no_leak,
    host_firewall,
)

pytestmark = pytest.mark.root

# Created in this order (the foreign nft NAT chain registers first, docker's after it).
FOREIGN_NFT = """\
table inet foreign {
\tcounter seen {
\t}
\tset blocked {
\t\ttype ipv4_addr
\t\telements = { 203.0.113.99 }
\t}
\tchain out {
\t\ttype filter hook output priority 10; policy accept;
\t\tip daddr @blocked drop
\t\tcounter name "seen"
\t}
\tchain fnat {
\t\ttype nat hook output priority -100; policy accept;
\t\tip daddr 203.0.113.10 tcp dport 8082 dnat ip to 203.0.113.11:443
\t}
}
"""
DOCKER_V4 = """\
*nat
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT -d 203.0.113.10/32 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 203.0.113.11:80
-A POSTROUTING -s 198.51.100.192/26 ! -o docker0 -j MASQUERADE
-A DOCKER -i docker0 -j RETURN
COMMIT
*filter
:DOCKER-USER - [0:0]
-A FORWARD -j DOCKER-USER
-A OUTPUT -d 203.0.113.98/32 -m comment --comment foreign -j DROP
-A DOCKER-USER -j RETURN
COMMIT
"""
DOCKER_V6 = """\
*nat
:DOCKER - [0:0]
-A OUTPUT ! -d ::1/128 -m addrtype --dst-type LOCAL -j DOCKER
COMMIT
*filter
:DOCKER-USER - [0:0]
-A FORWARD -j DOCKER-USER
-A OUTPUT -d 2001:db8::98/128 -j DROP
COMMIT
"""
LEGACY_V4 = """\
*nat
:LEGACY-NAT - [0:0]
-A OUTPUT -j LEGACY-NAT
-A LEGACY-NAT -d 203.0.113.10/32 -p tcp -m tcp --dport 8081 -j DNAT \
--to-destination 203.0.113.11:443
COMMIT
*filter
:LEGACY-OUT - [0:0]
-A INPUT -s 203.0.113.97/32 -j DROP
-A OUTPUT -j LEGACY-OUT
-A LEGACY-OUT -d 203.0.113.97/32 -j DROP
COMMIT
"""
LEGACY_V6 = """\
*nat
:LEGACY-NAT - [0:0]
-A OUTPUT -j LEGACY-NAT
COMMIT
*filter
-A OUTPUT -d 2001:db8::97/128 -j DROP
COMMIT
"""
DNAT_PORTS = {"nft-table": 8082, "iptables-nft": 8080, "iptables-legacy": 8081}
DNAT_TO = {8080: (DNAT_TARGET, 80), 8081: (DNAT_TARGET, 443), 8082: (DNAT_TARGET, 443)}

SAVES = ("iptables-nft-save", "ip6tables-nft-save", "iptables-legacy-save",
         "ip6tables-legacy-save")


def _normalise(text: str) -> str:
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    text = "\n".join(lines) + "\n"
    text = re.sub(r"\[\d+:\d+\]", "[0:0]", text)
    return re.sub(r"packets \d+ bytes \d+", "packets 0 bytes 0", text)


def snapshot(t: Topology) -> dict[str, str]:
    shots = {"nft list ruleset": _normalise(t.ruleset())}
    for tool in SAVES:
        if not missing_tools([tool]):
            shots[tool] = _normalise(t.client.run([tool]).stdout)
    return shots


@pytest.fixture
def foreign(clean: Topology) -> Iterator[Topology]:
    t = clean
    if missing_tools(["iptables-nft-restore", "iptables-legacy-restore"]):
        pytest.skip("iptables-nft and iptables-legacy are both needed for the foreign rules")
    t.client.run(["nft", "-f", "-"], input=FOREIGN_NFT)
    t.client.run(["iptables-nft-restore", "--noflush"], input=DOCKER_V4)
    t.client.run(["ip6tables-nft-restore", "--noflush"], input=DOCKER_V6)
    t.client.run(["iptables-legacy-restore", "--noflush"], input=LEGACY_V4)
    t.client.run(["ip6tables-legacy-restore", "--noflush"], input=LEGACY_V6)
    yield t
    t.netspectre(None, "stop", "--force")
    t.client.run(["nft", "flush", "ruleset"])
    host_firewall(t.client)
    for tool in ("iptables-legacy", "ip6tables-legacy"):
        for table in ("filter", "nat"):
            t.client.run([tool, "-t", table, "-F"])
            t.client.run([tool, "-t", table, "-X"])


def _dnat_claims_without_us(t: Topology) -> None:
    for port, (addr, to) in DNAT_TO.items():
        got = t.root.call("tcp", dst=WEB, port=port)
        assert got.get("banner") == f"SERVER {addr} {to}", f"foreign DNAT :{port} not live: {got}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_foreign_rules_identical_after_stop(foreign: Topology, backend: str) -> None:
    t = foreign
    before = snapshot(t)
    assert "table inet foreign" in before["nft list ruleset"]
    cfg = t.config(backend)
    t.start(cfg)
    active = snapshot(t)
    assert "table inet foreign" in active["nft list ruleset"]
    # Other software changes its rules while we are active.
    t.client.run(["nft", "add", "rule", "inet", "foreign", "out", "ip", "daddr", "203.0.113.96",
                  "counter", "drop", "comment", '"added-while-active"'])
    t.client.run(["iptables-nft", "-I", "OUTPUT", "1", "-d", "203.0.113.95/32", "-j", "DROP"])
    t.client.run(["iptables-nft", "-D", "FORWARD", "-j", "DOCKER-USER"])
    t.client.run(["iptables-nft", "-I", "FORWARD", "1", "-j", "DOCKER-USER"])
    t.client.run(["iptables-legacy", "-A", "OUTPUT", "-d", "203.0.113.94/32", "-j", "DROP"])
    t.client.run(["ip6tables-nft", "-I", "OUTPUT", "1", "-d", "2001:db8::94/128", "-j", "DROP"])
    t.stop(cfg)
    after = snapshot(t)
    assert "added-while-active" in after["nft list ruleset"]
    assert "-A OUTPUT -d 203.0.113.95/32 -j DROP" in after["iptables-nft-save"]
    assert "-A OUTPUT -d 203.0.113.94/32 -j DROP" in after["iptables-legacy-save"]
    assert "-A OUTPUT -d 2001:db8::94/128 -j DROP" in after["ip6tables-nft-save"]
    # Take back exactly what was added: everything else must be as it was before start.
    handles = t.client.run(["nft", "-a", "list", "chain", "inet", "foreign", "out"]).stdout
    handle = re.search(r'added-while-active" # handle (\d+)', handles)
    assert handle, handles
    t.client.run(["nft", "delete", "rule", "inet", "foreign", "out", "handle", handle[1]])
    t.client.run(["iptables-nft", "-D", "OUTPUT", "-d", "203.0.113.95/32", "-j", "DROP"])
    t.client.run(["iptables-legacy", "-D", "OUTPUT", "-d", "203.0.113.94/32", "-j", "DROP"])
    t.client.run(["ip6tables-nft", "-D", "OUTPUT", "-d", "2001:db8::94/128", "-j", "DROP"])
    restored = snapshot(t)
    for name, text in before.items():
        assert restored[name] == text, f"{name} differs after stop:\n" + "\n".join(
            difflib.unified_diff(text.splitlines(), restored[name].splitlines(), "before start",
                                 "after stop", lineterm=""))
    _dnat_claims_without_us(t)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("source", list(DNAT_PORTS))
def test_foreign_dnat_cannot_claim_our_connections(foreign: Topology, backend: str,
                                                   source: str,
                                                   request: pytest.FixtureRequest) -> None:
    if backend == "iptables-legacy" and source in ("nft-table", "iptables-nft"):
        # Known limit (README): legacy NAT hooks sit at -100, so a NAT chain registered there
        # earlier by nftables wins. It fails closed (connection refused), never in the clear.
        request.applymarker(pytest.mark.xfail(strict=True, reason="legacy NAT is at -100"))
    t = foreign
    port = DNAT_PORTS[source]
    addr, to = DNAT_TO[port]
    assert t.root.call("tcp", dst=WEB, port=port)["banner"] == f"SERVER {addr} {to}"
    cfg = t.config(backend)
    t.start(cfg)
    got = {who: agent.call("tcp", dst=WEB, port=port)
           for who, agent in (("root", t.root), ("nobody", t.nobody))}
    for who, result in got.items():
        assert result.get("banner") == f"TOR {WEB} {port}", \
            f"{source}'s DNAT :{port} claimed {who}'s connection before our redirect: {result}"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("tool", ["iptables-nft", "iptables-legacy"])
def test_accept_rules_inserted_while_active_open_no_hole(foreign: Topology, backend: str,
                                                         tool: str,
                                                         request: pytest.FixtureRequest) -> None:
    """Docker restarting while we are active puts its ACCEPT rules at the top of FORWARD and
    other software may do the same in OUTPUT: that must not open a way around our block."""
    if backend == tool:
        # Known limit (README): in one iptables table an ACCEPT above our jump ends the chain
        # before we see the packet; only nft's own table (or the other flavour's hook) is immune.
        request.applymarker(pytest.mark.xfail(strict=True, reason="iptables: ACCEPT above us"))
    t = foreign
    t.start(t.config(backend))
    for chain in ("OUTPUT", "FORWARD"):
        t.client.run([tool, "-I", chain, "1", "-j", "ACCEPT"])
    t.client.run([tool.replace("iptables", "ip6tables"), "-I", "OUTPUT", "1", "-j", "ACCEPT"])
    cap = t.capture()
    got = t.probe({
        "udp": (t.root, "udp", {"dst": WEB, "port": 3478, "timeout": 0.3}),
        "quic": (t.nobody, "udp", {"dst": WEB, "port": 443, "timeout": 0.3}),
        "tcp6": (t.root, "tcp", {"dst": WEB6, "port": 80, "timeout": 0.3}),
        "guest-udp": (t.guest_agent, "udp", {"dst": WEB, "port": 3478, "timeout": 0.3}),
        "guest-tcp": (t.guest_agent, "tcp", {"dst": WEB, "port": 80, "timeout": 0.3}),
    })
    packets = t.finish(cap)
    reached = {k: v for k, v in got.items() if not v.get("error")}
    assert_no_leak(packets)
    assert not reached, reached
