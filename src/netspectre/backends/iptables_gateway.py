"""[gateway] and ipv6 = "torify" for the iptables backends: the same steps as nft's
(backends/gateway.py, nft._nat), one rule per gateway interface (`-i NAME` matches by name,
so an interface that appears later is covered like nft's `iifname` set). Pure.

iptables.py calls these with its own rule formatters (`rule`, `refuse`), so the text reads
exactly like the rest of its chains.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from netspectre.backends.gateway import DHCP_SERVER
from netspectre.backends.iptables_rules import bypass
from netspectre.backends.names import ND_TYPES

if TYPE_CHECKING:
    from netspectre.policy import Policy

Rule = Callable[..., str]
Refuse = Callable[[str, str, str], list[str]]

# ICMPv6 types by number (ip6tables-save prints numbers): RS, NS, NA in; RA, NS, NA out.
ND_IN = tuple(t for name, t in ND_TYPES if name != "nd-router-advert")
ND_OUT = tuple(t for name, t in ND_TYPES if name != "nd-router-solicit")


def _admin(family: int) -> str:
    return ("REJECT --reject-with icmp-admin-prohibited" if family == 4
            else "REJECT --reject-with icmp6-adm-prohibited")


def prerouting(p: Policy, rule: Rule) -> list[str]:
    """nat PREROUTING (both families): the clients' DNS and TCP to tor's gateway ports."""
    dns, trans = f"REDIRECT --to-ports {p.gateway_dns_port}", \
        f"REDIRECT --to-ports {p.gateway_trans_port}"
    rules: list[str] = []
    for name in p.gateway:
        rules += [rule(f"-i {name} -p udp -m udp --dport 53", dns, "gateway_dns"),
                  rule(f"-i {name} -p tcp -m tcp --dport 53", dns, "gateway_dns"),
                  rule(f"-i {name} -p tcp", trans, "gateway_torified")]
    return rules


def input_rules(p: Policy, family: int, rule: Rule, refuse: Refuse) -> list[str]:
    """After `-i lo RETURN`: each gateway interface's admitted traffic, the rest of it
    refused at once; then the gateway's ports dropped from every other interface."""
    if not p.gateway:
        return []
    gw, dns = p.gateway_trans_port, p.gateway_dns_port
    icmp = "-p icmp" if family == 4 else "-p ipv6-icmp"
    rules: list[str] = []
    for name in p.gateway:
        i = f"-i {name}"
        rules += [rule(f"{i} -m conntrack --ctstate RELATED,ESTABLISHED", "RETURN"),
                  rule(f"{i} -p tcp -m tcp --dport {gw}", "RETURN"),
                  rule(f"{i} -p udp -m udp --dport {dns}", "RETURN"),
                  rule(f"{i} -p tcp -m tcp --dport {dns}", "RETURN"),
                  *(rule(f"{i} -p udp -m udp --dport {port}", "RETURN") for port in DHCP_SERVER),
                  *(rule(f"{i} {icmp} -m icmp6 --icmpv6-type {t}", "RETURN")
                    for t in (ND_IN if family == 6 else ())),
                  *refuse(f"{i} -p tcp", "REJECT --reject-with tcp-reset", "gateway_refused"),
                  *refuse(i, _admin(family), "gateway_refused")]
    rules += [rule(f"-p tcp -m tcp --dport {gw}", "DROP", "blocked_incoming"),
              rule(f"-p udp -m udp --dport {dns}", "DROP", "blocked_incoming"),
              rule(f"-p tcp -m tcp --dport {dns}", "DROP", "blocked_incoming")]
    return rules


def output_rules(p: Policy, family: int, rule: Rule) -> list[str]:
    """Replies (tor's answers, our rejects), DHCP answers and ND towards the clients."""
    rules: list[str] = []
    for name in p.gateway:
        o = f"-o {name}"
        rules += [rule(f"{o} -m conntrack --ctdir REPLY", "RETURN"),
                  *(rule(f"{o} -p udp -m udp --sport {port}", "RETURN") for port in DHCP_SERVER),
                  *(rule(f"{o} -p ipv6-icmp -m icmp6 --icmpv6-type {t}", "RETURN")
                    for t in (ND_OUT if family == 6 else ()))]
    return rules


def forward_rules(p: Policy, family: int, refuse: Refuse) -> list[str]:
    rules: list[str] = []
    for name in p.gateway:
        rules += [*refuse(f"-i {name} -p tcp", "REJECT --reject-with tcp-reset",
                          "gateway_refused"),
                  *refuse(f"-i {name}", _admin(family), "gateway_refused")]
    return rules


def nat6(p: Policy, rule: Rule) -> list[str]:
    """ipv6 = "torify": ip6tables nat OUTPUT, the IPv4 chain's steps (nft._nat) for IPv6."""
    trans = f"REDIRECT --to-ports {p.trans_port}"
    return [
        rule(f"-m owner --uid-owner {p.tor_uid}", "RETURN"),
        *bypass(p),  # a deliberate hole (issue 10): their IPv6 is not redirected either
        rule("-p udp -m udp --dport 53", f"REDIRECT --to-ports {p.dns_port}", "dns_redirected"),
        rule(f"-d {p.virtual_network6} -p tcp", trans, "tcp_torified"),
        rule("-m addrtype --dst-type LOCAL", "RETURN"),
        *(rule(f"-d {n}", "RETURN") for n in p.lan6),
        rule("-p tcp", trans, "tcp_torified"),
    ]
