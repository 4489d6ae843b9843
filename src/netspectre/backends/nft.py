"""Policy → one nftables script for `table inet netspectre`, replaced atomically. Pure."""

from __future__ import annotations

import json
import socket

from netspectre.backends import COUNTERS, Script
from netspectre.policy import FILTER_PRIORITY, NAT_PRIORITY, TABLE, Policy, by_prefix

ARGV = ("nft", "-f", "-")
CHECK_ARGV = ("nft", "-c", "-f", "-")
# Neighbour discovery, needed only to reach IPv6 LAN ranges (ipv6 = "block", allow_lan).
ND_TYPES = ("nd-router-solicit", "nd-router-advert", "nd-neighbor-solicit", "nd-neighbor-advert")

# TCP flag combinations no real stack sends; the transproxy FIN/RST leak is caught by
# `ct state invalid`, these catch crafted packets that conntrack would still track.
BAD_TCP_FLAGS = (
    "tcp flags & (fin|syn) == fin|syn",
    "tcp flags & (syn|rst) == syn|rst",
    "tcp flags & (fin|rst) == fin|rst",
    "tcp flags & (fin|ack) == fin",
    "tcp flags & (psh|ack) == psh",
    "tcp flags & (urg|ack) == urg",
    "tcp flags & (fin|syn|rst|psh|ack|urg) == 0x0",
)


def _mask(family: int, prefix: int) -> str:
    bits = 32 if family == 4 else 128
    value = ((1 << prefix) - 1) << (bits - prefix)
    return socket.inet_ntop(
        socket.AF_INET if family == 4 else socket.AF_INET6, value.to_bytes(bits // 8, "big")
    )


def _lan_sets(p: Policy) -> tuple[list[str], list[str]]:
    """Named sets, one per (family, prefix length), and the match expression for each."""
    sets: list[str] = []
    matches: list[str] = []
    for family, nets in ((4, p.lan4), (6, p.lan6)):
        ip, kind = ("ip", "ipv4_addr") if family == 4 else ("ip6", "ipv6_addr")
        for prefix, addrs in by_prefix(nets).items():
            name = f"lan{family}_{prefix}"
            sets += [f"\tset {name} {{", f"\t\ttype {kind}",
                     f"\t\telements = {{ {', '.join(addrs)} }}", "\t}"]
            matches.append(f"{ip} daddr & {_mask(family, prefix)} @{name}")
    return sets, matches


def _chain(name: str, header: str, rules: list[str]) -> list[str]:
    return [f"\tchain {name} {{", f"\t\t{header}", *(f"\t\t{r}" for r in rules), "\t}"]


def table(p: Policy) -> str:
    """The full definition of our table (without the replace preamble)."""
    uid = p.tor_uid
    vnet = p.virtual_network
    sets, lan = _lan_sets(p)
    lan4 = [m for m in lan if m.startswith("ip ")]
    nat = [
        f"meta skuid {uid} return",
        "meta nfproto != ipv4 return",
        f"udp dport 53 counter name dns_redirected redirect to :{p.dns_port}",
        f"ip daddr {vnet} meta l4proto tcp counter name tcp_torified redirect to :{p.trans_port}",
        "fib daddr type local return",
        *(f"{m} return" for m in lan4),
        f"meta l4proto tcp counter name tcp_torified redirect to :{p.trans_port}",
    ]
    out = [
        "ct state invalid counter name blocked_invalid drop",
        *(f"{flags} counter name blocked_invalid drop" for flags in BAD_TCP_FLAGS),
        # A datagram shorter than a DNS header crashes tor 0.4.9 (libevent #1231): any local
        # user could keep Tor down. Matched after the redirect, so it covers all of UDP 53.
        f"udp dport {p.dns_port} udp length < 20 counter name blocked_invalid drop",
        "oifname \"lo\" accept",
        "ip daddr 127.0.0.0/8 accept",
        "ip6 daddr ::1 accept",
        # Only packets with Tor's socket owner: its TIME_WAIT ACKs carry none and are refused.
        # Marking Tor's flows in conntrack would let them out, but trusts a mark bit that any
        # other software's --save-mark may set too.
        f"meta skuid {uid} meta nfproto ipv4 accept",
        *(() if p.block_incoming else ("ct direction reply accept",)),
        f"ip daddr {vnet} counter name blocked_other reject with icmpx type admin-prohibited",
        "th dport 53 counter name blocked_dns reject with icmpx type admin-prohibited",
    ]
    if p.allow_lan:
        out += [*(f"{m} accept" for m in lan),
                "ip daddr 255.255.255.255 udp sport 68 udp dport 67 accept"]
        if p.lan6:
            out.append(f"icmpv6 type {{ {', '.join(ND_TYPES)} }} accept")
    out += [
        # TCP gets a reset, IPv6 included: an ICMP error makes connect() wait ~1 s for a retry.
        "meta nfproto ipv6 meta l4proto tcp counter name blocked_ipv6 reject with tcp reset",
        "meta nfproto ipv6 counter name blocked_ipv6 reject with icmpx type admin-prohibited",
        "meta l4proto tcp counter name blocked_tcp reject with tcp reset",
        "meta l4proto udp counter name blocked_udp reject with icmpx type admin-prohibited",
        "meta l4proto icmp counter name blocked_icmp reject with icmpx type admin-prohibited",
        "counter name blocked_other reject with icmpx type admin-prohibited",
    ]
    forward = ["counter name blocked_forward reject with icmpx type admin-prohibited"]
    lines = [f"table inet {TABLE} {{"]
    lines += [f"\tcounter {name} {{\n\t}}" for name in COUNTERS]
    # LAN sets are rendered even when allow_lan is false: nat must still not torify LAN TCP
    # (the filter then refuses it), so a LAN host never sees it arrive from a Tor exit.
    lines += sets
    lines += _chain(
        "nat_output", f"type nat hook output priority {NAT_PRIORITY}; policy accept;", nat
    )
    lines += _chain(
        "output", f"type filter hook output priority {FILTER_PRIORITY}; policy drop;", out
    )
    lines += _chain(
        "forward", f"type filter hook forward priority {FILTER_PRIORITY}; policy drop;", forward
    )
    if p.block_incoming:
        incoming = [
            "iifname \"lo\" accept",
            "ct state invalid drop",
            "ct state established,related accept",
        ]
        if p.allow_lan:
            incoming.append("meta nfproto ipv4 udp sport 67 udp dport 68 accept")
            if p.lan6:
                incoming.append(f"icmpv6 type {{ {', '.join(ND_TYPES)} }} accept")
        incoming.append("counter name blocked_incoming drop")
        lines += _chain(
            "input", f"type filter hook input priority {FILTER_PRIORITY}; policy drop;", incoming
        )
    lines.append("}")
    return "\n".join(lines) + "\n"


def _preamble() -> str:
    # `table … {}` then `delete table …`: works whether or not the table exists, in the same
    # transaction as the new definition (nft 1.0.6 has no `destroy`).
    return f"table inet {TABLE} {{}}\ndelete table inet {TABLE}\n"


def render(p: Policy) -> tuple[Script, ...]:
    return (Script(ARGV, _preamble() + table(p)),)


def teardown() -> tuple[Script, ...]:
    return (Script(ARGV, _preamble()),)


def parse_counters(listing_json: str) -> dict[str, dict[str, int]]:
    """`nft -j list counters table inet netspectre` → {name: {packets, bytes}}."""
    data = json.loads(listing_json)
    result: dict[str, dict[str, int]] = {}
    for item in data.get("nftables", []):
        counter = item.get("counter")
        if counter and counter.get("table") == TABLE:
            result[counter["name"]] = {
                "packets": int(counter.get("packets", 0)),
                "bytes": int(counter.get("bytes", 0)),
            }
    return result
