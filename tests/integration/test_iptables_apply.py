"""The iptables backend against the real kernel, both variants, each in a fresh namespace.

Every iptables command here runs under `ip netns exec` in a namespace this module created; the
host's own firewall is never read or written.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from netspectre.backends import COUNTERS, Backend, iptables
from netspectre.backends.script import Script
from netspectre.policy import Policy

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(shutil.which("ip") is None, reason="needs iproute2 (`ip`)"),
]

VARIANTS = [
    pytest.param(
        v,
        id=v.value,
        marks=pytest.mark.skipif(
            shutil.which(iptables.save_argv(v, 4)[0], path="/usr/sbin:/sbin:/usr/bin") is None,
            reason=f"{v.value} not installed",
        ),
    )
    for v in (Backend.IPTABLES_LEGACY, Backend.IPTABLES_NFT)
]

# Other software's rules, docker-style, some of them mentioning our name in ways that are not
# our marker: a stop must leave every one of them exactly as it was.
FOREIGN_V4 = """\
*nat
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
-A DOCKER -i docker0 -j RETURN
COMMIT
*filter
:DOCKER-USER - [0:0]
:netspectre - [0:0]
-A INPUT -p tcp -m tcp --dport 22 -m comment --comment netspectre-ssh -j ACCEPT
-A FORWARD -j DOCKER-USER
-A OUTPUT -d 203.0.113.7/32 -m comment --comment "not netspectre" -j DROP
-A OUTPUT -d 203.0.113.8/32 -m comment --comment "netspectre:blocked_udp" -j DROP
-A OUTPUT -p udp -m udp --dport 514 -j LOG --log-prefix "netspectre "
-A OUTPUT -d 203.0.113.9/32 -j netspectre
-A DOCKER-USER -j RETURN
COMMIT
"""
FOREIGN_V6 = """\
*filter
:DOCKER-USER - [0:0]
-A FORWARD -j DOCKER-USER
-A OUTPUT -d 2001:db8::7/128 -m comment --comment "not netspectre" -j DROP
-A DOCKER-USER -j RETURN
COMMIT
"""
# Added while we are active: a rule above our jump, and docker re-inserting its FORWARD jump
# at the top (as it does when it restarts), which pushes ours down.
WHILE_ACTIVE_V4 = """\
*filter
-I OUTPUT 1 -d 198.51.100.9/32 -j REJECT --reject-with icmp-port-unreachable
-D FORWARD -j DOCKER-USER
-I FORWARD 1 -j DOCKER-USER
COMMIT
"""
WHILE_ACTIVE_V6 = """\
*filter
-A INPUT -s 2001:db8::/32 -j DROP
COMMIT
"""
HOOKS = {("nat", iptables.NAT): "OUTPUT", ("filter", iptables.OUT): "OUTPUT",
         ("filter", iptables.FWD): "FORWARD", ("filter", iptables.IN): "INPUT"}


def policy(*, block_incoming: bool = True, allow_lan: bool = True) -> Policy:
    return Policy(
        tor_uid=102,
        tor_user="debian-tor",
        trans_port=9040,
        dns_port=9053,
        virtual_network=ipaddress.IPv4Network("10.192.0.0/10"),
        lan4=("198.51.100.0/24",),  # TEST-NET as "the LAN": never target real private ranges
        lan6=("2001:db8:ffff::/48",),
        allow_lan=allow_lan,
        block_incoming=block_incoming,
        disable_ipv6=False,
    )


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@pytest.fixture
def make_netns() -> Iterator[Callable[[], str]]:
    """Create fresh, uniquely named namespaces on demand; every one is deleted afterwards."""
    made: list[str] = []

    def make() -> str:
        name = f"ns-ipt-{secrets.token_hex(4)}"
        _ip("netns", "add", name)
        made.append(name)
        return name

    yield make
    for name in made:
        subprocess.run(["ip", "netns", "delete", name], check=False, capture_output=True)


def run(ns: str, argv: tuple[str, ...] | list[str], text: str | None = None) -> str:
    done = subprocess.run(
        ["ip", "netns", "exec", ns, *argv], input=text, capture_output=True, text=True
    )
    assert done.returncode == 0, f"{' '.join(argv)} failed in {ns}:\n{done.stderr}\n{text}"
    return done.stdout


def saves(ns: str, variant: Backend, *, counters: bool = False) -> tuple[str, str]:
    return (
        run(ns, iptables.save_argv(variant, 4, counters=counters)),
        run(ns, iptables.save_argv(variant, 6, counters=counters)),
    )


def restore(ns: str, variant: Backend, family: int, text: str) -> None:
    run(ns, iptables.restore_argv(variant, family), text)


def apply(ns: str, scripts: tuple[Script, ...]) -> None:
    """Like firewall.apply: test every script before committing any."""
    for script in scripts:
        run(ns, [*script.argv, "--test"], script.text)
    for script in scripts:
        run(ns, script.argv, script.text)


def start(ns: str, variant: Backend, p: Policy) -> None:
    v4, v6 = saves(ns, variant)
    scripts = iptables.render(p, variant=variant, saved_v4=v4, saved_v6=v6)
    assert [s.argv[0].split("-")[0] for s in scripts] == ["ip6tables", "iptables"]
    apply(ns, scripts)


def normalise(text: str) -> str:
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    return "\n".join(re.sub(r"\[\d+:\d+\]", "[0:0]", line) for line in lines) + "\n"


def check_active(saved: str, p: Policy, family: int) -> None:
    """Our chains hold exactly the rendered rules, each hook's first rule is our only jump."""
    parsed = iptables.parse(saved)
    wanted = iptables.chains(p, family)
    for chain in wanted:
        rules = [r.spec for r in parsed.rules if r.table == chain.table and r.chain == chain.name]
        assert rules == list(chain.rules), f"{chain.name} differs from the render"
        hook = [r for r in parsed.rules if r.table == chain.table and r.chain == chain.hook]
        assert hook[0].target == chain.name and hook[0].marked, f"{chain.hook}: jump not first"
        jumps = [r for r in hook if r.marked or r.target in iptables.CHAINS]
        assert len(jumps) == 1, f"{chain.hook}: {len(jumps)} jumps"
    names = {(c.table, c.name) for c in wanted}
    for table, declared in parsed.chains.items():
        for name in set(declared) & set(iptables.CHAINS):
            assert (table, name) in names, f"stale chain {table}/{name}"
    for r in parsed.rules:
        if r.target in iptables.CHAINS:
            assert (r.table, r.target) in names and HOOKS[(r.table, r.target)] == r.chain


@pytest.mark.parametrize("variant", VARIANTS)
def test_start_restart_stop_leaves_foreign_rules(
    variant: Backend, make_netns: Callable[[], str]
) -> None:
    ns, reference = make_netns(), make_netns()
    for where in (ns, reference):
        restore(where, variant, 4, FOREIGN_V4)
        restore(where, variant, 6, FOREIGN_V6)
    p = policy()

    start(ns, variant, p)
    v4, v6 = saves(ns, variant)
    check_active(v4, p, 4)
    check_active(v6, p, 6)

    start(ns, variant, p)  # restart: declared chains are flushed, jumps are not duplicated
    v4, v6 = saves(ns, variant)
    check_active(v4, p, 4)
    check_active(v6, p, 6)
    assert "\n-I " not in iptables.render(p, variant=variant, saved_v4=v4, saved_v6=v6)[1].text

    for where in (ns, reference):
        restore(where, variant, 4, WHILE_ACTIVE_V4)
        restore(where, variant, 6, WHILE_ACTIVE_V6)
    start(ns, variant, p)  # our displaced jumps go back to the top
    v4, v6 = saves(ns, variant)
    check_active(v4, p, 4)
    check_active(v6, p, 6)

    allow = policy(block_incoming=False)
    start(ns, variant, allow)  # a policy change removes what is no longer wanted
    v4, v6 = saves(ns, variant)
    check_active(v4, allow, 4)
    check_active(v6, allow, 6)

    scripts = iptables.teardown(variant=variant, saved_v4=v4, saved_v6=v6)
    assert [s.argv[0].split("-")[0] for s in scripts] == ["iptables", "ip6tables"]
    apply(ns, scripts)
    after, expected = saves(ns, variant), saves(reference, variant)
    assert normalise(after[0]) == normalise(expected[0])
    assert normalise(after[1]) == normalise(expected[1])
    assert iptables.teardown(variant=variant, saved_v4=after[0], saved_v6=after[1]) == ()


@pytest.mark.parametrize("variant", VARIANTS)
def test_stop_after_partial_state(variant: Backend, make_netns: Callable[[], str]) -> None:
    """A crash can leave chains without jumps, or only one family: stop still cleans up."""
    ns = make_netns()
    p = policy()
    scripts = iptables.render(p, variant=variant, saved_v4="", saved_v6="")
    apply(ns, scripts[:1])  # IPv6 committed, IPv4 never was
    restore(ns, variant, 4, "*filter\n:NETSPECTRE-OUT - [0:0]\n-A NETSPECTRE-OUT -j DROP\nCOMMIT\n")
    v4, v6 = saves(ns, variant)
    apply(ns, iptables.teardown(variant=variant, saved_v4=v4, saved_v6=v6))
    v4, v6 = saves(ns, variant)
    assert "NETSPECTRE" not in v4 + v6
    assert iptables.teardown(variant=variant, saved_v4=v4, saved_v6=v6) == ()


PROBE = """
import os, socket, sys
def udp(family, addr, port):
    s = socket.socket(family, socket.SOCK_DGRAM)
    try:
        s.sendto(b"leak?", (addr, port))
    except OSError:
        pass
def tcp(addr, port):
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect((addr, port))
    except OSError:
        pass
if sys.argv[1] == "tor":
    os.setgid(102)
    os.setuid(102)
    udp(socket.AF_INET, "203.0.113.50", 9001)
else:
    udp(socket.AF_INET, "203.0.113.1", 9999)
    udp(socket.AF_INET, "203.0.113.1", 53)
    tcp("203.0.113.1", 80)
    tcp("10.200.0.1", 80)
    udp(socket.AF_INET, "10.200.0.1", 80)
    udp(socket.AF_INET6, "2001:db8:1::1", 9999)
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    try:
        s.sendto(bytes([8, 0, 0xf7, 0xff, 0, 0, 0, 0]), ("203.0.113.1", 0))
    except OSError:
        pass
"""


def tx_packets(ns: str, dev: str) -> int:
    stats = run(ns, ["cat", f"/sys/class/net/{dev}/statistics/tx_packets"])
    return int(stats.strip())


def wan(ns: str, up_after: Callable[[], None]) -> None:
    """A veth `wan0` with default routes; `up_after` (the firewall) runs before it goes up."""
    for cmd in (
        ["ip", "link", "set", "lo", "up"],
        # `arp off`: neighbour discovery (ARP is seen by no firewall) must not move wan0's
        # transmit counter; the peer only exists so that wan0 can carry packets.
        ["ip", "link", "add", "wan0", "type", "veth", "peer", "name", "wan1"],
        ["ip", "link", "set", "wan0", "arp", "off"],
        ["sysctl", "-q", "-w", "net.ipv6.conf.wan1.disable_ipv6=1"],
        ["ip", "link", "set", "wan1", "up"],
        ["ip", "addr", "add", "192.0.2.2/24", "dev", "wan0"],
        ["ip", "addr", "add", "2001:db8::2/64", "dev", "wan0", "nodad"],
        ["sysctl", "-q", "-w", "net.ipv6.conf.wan0.router_solicitations=0"],
    ):
        run(ns, cmd)
    up_after()
    for cmd in (
        ["ip", "link", "set", "wan0", "up"],
        ["ip", "route", "add", "default", "via", "192.0.2.1"],
        ["ip", "-6", "route", "add", "default", "via", "2001:db8::1"],
    ):
        run(ns, cmd)


@pytest.mark.parametrize("variant", VARIANTS)
def test_nothing_leaves_but_tor_and_counters_count(
    variant: Backend, make_netns: Callable[[], str]
) -> None:
    ns = make_netns()
    wan(ns, lambda: apply(ns, iptables.render(policy(), variant=variant, saved_v4="",
                                                saved_v6="")))

    before = tx_packets(ns, "wan0")
    run(ns, [sys.executable, "-c", PROBE, "user"])
    assert tx_packets(ns, "wan0") == before, "a packet left the machine outside Tor"

    run(ns, [sys.executable, "-c", PROBE, "tor"])
    assert tx_packets(ns, "wan0") == before + 1, "Tor's own traffic must pass"

    counts = iptables.parse_counters(*saves(ns, variant, counters=True))
    assert set(counts) == set(COUNTERS)
    for name in ("blocked_udp", "blocked_icmp", "blocked_ipv6", "blocked_other",
                 "tcp_torified", "dns_redirected"):
        assert counts[name]["packets"] >= 1, (name, counts)
    assert counts["tcp_torified"]["packets"] >= 2  # 203.0.113.1:80 and 10.200.0.1:80 (vnet)


@dataclass(frozen=True)
class Probe:
    leaves: bool  # expected: does wan0 transmit it?
    kind: str  # udp, tcp (one SYN) or icmp (one echo request)
    addr: str
    port: int = 0
    sport: int = 0
    uid: int = 0


PROBES = {
    "udp": Probe(False, "udp", "203.0.113.1", 9999),
    "udp-dns": Probe(False, "udp", "203.0.113.1", 53),
    "tcp": Probe(False, "tcp", "203.0.113.1", 80),
    "tcp-vnet": Probe(False, "tcp", "10.200.0.1", 80),
    "udp-vnet": Probe(False, "udp", "10.200.0.1", 80),
    "icmp": Probe(False, "icmp", "203.0.113.1"),
    "udp-lan": Probe(True, "udp", "198.51.100.7", 9999),
    "tcp-lan": Probe(True, "tcp", "198.51.100.7", 80),
    "tcp-lan-dns": Probe(False, "tcp", "198.51.100.7", 53),
    "udp-lan-dns": Probe(False, "udp", "198.51.100.7", 53),
    "dhcp": Probe(True, "udp", "255.255.255.255", 67, sport=68),
    "dhcp-port-to-internet": Probe(False, "udp", "203.0.113.1", 67, sport=68),
    "udp6": Probe(False, "udp", "2001:db8:1::1", 9999),
    "tcp6": Probe(False, "tcp", "2001:db8:1::1", 80),
    "udp6-lan": Probe(True, "udp", "2001:db8:ffff::5", 9999),
    "udp6-lan-dns": Probe(False, "udp", "2001:db8:ffff::5", 53),
    "dhcp-port-over-ipv6": Probe(False, "udp", "2001:db8:1::1", 67, sport=68),
    "tor-udp": Probe(True, "udp", "203.0.113.50", 9001, uid=102),
    "tor-tcp": Probe(True, "tcp", "203.0.113.50", 9001, uid=102),
    "tor-udp6": Probe(False, "udp", "2001:db8:1::50", 9001, uid=102),
}
# Verdicts where nft.py may legitimately differ from the iptables backend: none.
NFT_ONLY: dict[str, bool] = {}

SEND_ONE = """
import os, socket, sys, time
kind, addr, port, sport, uid = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
if uid:
    os.setgid(uid)
    os.setuid(uid)
fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
if kind == "icmp":
    s = socket.socket(fam, socket.SOCK_RAW, socket.IPPROTO_ICMP)
else:
    s = socket.socket(fam, socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM)
    opt = socket.SO_BROADCAST if kind == "udp" else socket.SO_REUSEADDR
    s.setsockopt(socket.SOL_SOCKET, opt, 1)
if sport:
    s.bind(("", sport))
s.setblocking(False)
try:
    if kind == "icmp":
        s.sendto(bytes([8, 0, 0xf7, 0xff, 0, 0, 0, 0]), (addr, 0))
    elif kind == "udp":
        s.sendto(b"leak?", (addr, port))
    else:
        s.connect((addr, port))
except OSError:
    pass
time.sleep(0.05)
s.close()
"""


def verdicts(ns: str) -> dict[str, bool]:
    result = {}
    for name, probe in PROBES.items():
        before = tx_packets(ns, "wan0")
        args = [probe.kind, probe.addr, str(probe.port), str(probe.sport), str(probe.uid)]
        run(ns, [sys.executable, "-c", SEND_ONE, *args])
        result[name] = tx_packets(ns, "wan0") > before
    return result


@pytest.mark.skipif(shutil.which("nft") is None, reason="nft not installed: nothing to compare")
@pytest.mark.parametrize("variant", VARIANTS)
def test_same_verdicts_as_nft(variant: Backend, make_netns: Callable[[], str]) -> None:
    """Each probe leaves (or not) the same way under the iptables backend and under nft.py."""
    from netspectre.backends import nft

    p = policy()
    ns_ipt, ns_nft = make_netns(), make_netns()
    wan(ns_ipt, lambda: apply(ns_ipt, iptables.render(p, variant=variant, saved_v4="",
                                                      saved_v6="")))

    def nft_up() -> None:
        for script in nft.render(p):
            run(ns_nft, script.argv, script.text)

    wan(ns_nft, nft_up)
    expected = {name: probe.leaves for name, probe in PROBES.items()}
    assert verdicts(ns_ipt) == expected
    assert verdicts(ns_nft) == {**expected, **NFT_ONLY}
