"""[gateway] (issue 11): what nft renders for the interfaces whose clients are torified. Pure.

Clients behind a gateway interface (docker0, virbr0, a hotspot's bridge) are matched by
interface *name* (`iifname @gateway_ifaces`): an interface that does not exist yet, or goes
away and comes back, is covered the moment it is there, with no watcher. In prerouting their
TCP (IPv4 and IPv6, to anywhere) is `redirect`ed to tor's gateway TransPort and their DNS
(UDP and TCP 53, to anywhere) to its gateway DNSPort, before any local dnsmasq sees it.
`redirect` rewrites the destination to the ingress interface's own address, which is why tor
listens for the gateway on 0.0.0.0 and [::] (DNAT to 127.0.0.1/::1 fails: the kernel drops
routed packets to loopback, always for IPv6). The input chain admits those two ports only
from the gateway interfaces (and lo) and drops them from every other interface, whatever
`incoming` says. Everything else from a gateway interface is rejected at once, in input and
in forward; DHCP to a local server and neighbour discovery / router solicitations pass.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from netspectre.backends.names import GATEWAY_COUNTERS

if TYPE_CHECKING:
    from netspectre.policy import Policy

SET = "gateway_ifaces"
COUNTERS = GATEWAY_COUNTERS
CHAIN = "nat_prerouting"
DHCP_SERVER = (67, 547)  # DHCPv4 and DHCPv6 servers (libvirt's and NM's dnsmasq)
# Neighbour discovery from clients (router solicitation, neighbour solicitation/advert) and
# what a router on the gateway side sends them (router advert, our neighbour messages).
ND_IN = ("nd-router-solicit", "nd-neighbor-solicit", "nd-neighbor-advert")
ND_OUT = ("nd-router-advert", "nd-neighbor-solicit", "nd-neighbor-advert")
ADMIN = "reject with icmpx type admin-prohibited"

Refuse = Callable[[str, str, str], list[str]]


ON = f"iifname @{SET}"


def set_lines(p: Policy) -> list[str]:
    if not p.gateway:
        return []
    names = ", ".join(f'"{name}"' for name in p.gateway)
    return [f"\tset {SET} {{", "\t\ttype ifname", f"\t\telements = {{ {names} }}", "\t}"]


def prerouting(p: Policy, priority: int) -> list[str]:
    """The nat chain that sends the clients' TCP and DNS to tor's gateway listeners."""
    if not p.gateway:
        return []
    rules = [
        f"iifname != @{SET} return",
        f"meta l4proto {{ tcp, udp }} th dport 53 counter name gateway_dns "
        f"redirect to :{p.gateway_dns_port}",
        f"meta l4proto tcp counter name gateway_torified redirect to :{p.gateway_trans_port}",
    ]
    return [f"\tchain {CHAIN} {{",
            f"\t\ttype nat hook prerouting priority {priority}; policy accept;",
            *(f"\t\t{r}" for r in rules), "\t}"]


def input_rules(p: Policy, refuse: Refuse) -> list[str]:
    """First in the input chain: the gateway's ports from its interfaces only, the rest of
    what its clients send to this host refused at once."""
    if not p.gateway:
        return []
    ports = f"{{ {p.gateway_trans_port}, {p.gateway_dns_port} }}"
    gw = ON
    return [
        # Tor's gateway listeners are on 0.0.0.0/[::]: never from the uplink (an open proxy).
        f'iifname != "lo" iifname != @{SET} meta l4proto {{ tcp, udp }} th dport {ports} '
        "counter name blocked_incoming drop",
        # Replies to what this host opened to its clients (allow_lan, their range in `lan`).
        f"{gw} ct state established,related accept",
        f"{gw} tcp dport {p.gateway_trans_port} accept",
        f"{gw} meta l4proto {{ tcp, udp }} th dport {p.gateway_dns_port} accept",
        f"{gw} udp dport {{ {', '.join(map(str, DHCP_SERVER))} }} accept",
        f"{gw} icmpv6 type {{ {', '.join(ND_IN)} }} accept",
        *refuse(f"{gw} meta l4proto tcp", "gateway_refused", "reject with tcp reset"),
        *refuse(gw, "gateway_refused", ADMIN),
    ]


def output_rules(p: Policy) -> list[str]:
    """What this host may send its gateway clients: replies to what input admitted (tor's
    answers, and the resets and ICMP errors of our rejects, which conntrack marks as related
    replies), DHCP answers and neighbour discovery."""
    if not p.gateway:
        return []
    gw = f"oifname @{SET}"
    return [f"{gw} ct direction reply accept",
            f"{gw} udp sport {{ {', '.join(map(str, DHCP_SERVER))} }} accept",
            f"{gw} icmpv6 type {{ {', '.join(ND_OUT)} }} accept"]


def forward_rules(p: Policy, refuse: Refuse) -> list[str]:
    """Never forwarded (the uplink stays closed): refused at once, counted as the gateway's."""
    if not p.gateway:
        return []
    return [*refuse(f"{ON} meta l4proto tcp", "gateway_refused", "reject with tcp reset"),
            *refuse(ON, "gateway_refused", ADMIN)]


def guard_rules(p: Policy, marked: str) -> list[str]:
    """The raw guard's extra rules at the egress of a gateway interface (the netdev family has
    no conntrack, so "a reply" cannot be asked there): tor's answers (its socket owner, either
    family), the resets and admin-prohibited errors of our rejects (kernel sockets: no owner),
    DHCP answers and router adverts. All must carry the mark (they passed the output chain);
    a raw sender that forges the mark can still send these shapes to the gateway's side only
    (README, known limits)."""
    return [f"{marked} meta skuid {p.tor_uid} accept",
            f"{marked} tcp flags rst accept",
            f"{marked} icmp type destination-unreachable icmp code admin-prohibited accept",
            f"{marked} icmpv6 type destination-unreachable icmpv6 code admin-prohibited accept",
            f"{marked} udp sport {{ {', '.join(map(str, DHCP_SERVER))} }} accept",
            f"{marked} icmpv6 type {{ {', '.join(ND_OUT)} }} accept"]
