"""Policy → one nftables script for `table inet netspectre`, replaced atomically. Pure.

The table is built in named steps, one per chain (Mullvad's `finalize`): `_nat`, `_output`,
`_forward`, `_input`, from the rule data in `names`.
"""

from __future__ import annotations

import json
import socket
from typing import TYPE_CHECKING

from netspectre.backends import gateway, guard
from netspectre.backends.names import (
    BAD_TCP_FLAGS,
    COUNTERS,
    FILTER_PRIORITY,
    LOG_BURST,
    LOG_GROUP,
    LOG_RATE,
    NAT_PRIORITY,
    ND_TYPES,
    NFT_FORWARD,
    NFT_INPUT,
    NFT_NAT,
    NFT_OUTPUT,
    TABLE,
)
from netspectre.backends.owners import bypass
from netspectre.backends.script import Script

if TYPE_CHECKING:
    from netspectre.policy import Policy

ARGV = ("nft", "-f", "-")
CHECK_ARGV = ("nft", "-c", "-f", "-")


def by_prefix(cidrs: tuple[str, ...]) -> dict[int, list[str]]:
    """Group networks by prefix length: each group is an exact-match set behind one mask.

    Hash sets load ~3x faster than one interval set in nft 1.0.6 and need no merging of
    overlapping ranges; there are at most 33 (IPv4) or 129 (IPv6) groups.
    """
    groups: dict[int, list[str]] = {}
    for cidr in cidrs:
        addr, _, length = cidr.partition("/")
        groups.setdefault(int(length), []).append(addr)
    return dict(sorted(groups.items()))


def tcp_flags(mask: tuple[str, ...], comp: tuple[str, ...]) -> str:
    """One of names.BAD_TCP_FLAGS as an nft match."""
    return f"tcp flags & ({'|'.join(mask)}) == {'|'.join(comp) or '0x0'}"


def _nd() -> str:
    return f"icmpv6 type {{ {', '.join(name for name, _ in ND_TYPES)} }} accept"


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


def _filter(name: str, hook: str, rules: list[str]) -> list[str]:
    return _chain(
        name, f"type filter hook {hook} priority {FILTER_PRIORITY}; policy drop;", rules
    )


def _refuse(match: str, counter: str, verdict: str) -> list[str]:
    """A refusing rule, preceded by its rate-limited log rule (same match, no verdict)."""
    match = f"{match} " if match else ""
    return [f"{match}limit rate {LOG_RATE}/second burst {LOG_BURST} packets "
            f"log prefix \"{counter}\" group {LOG_GROUP}",
            f"{match}counter name {counter} {verdict}"]


def _nat(p: Policy, lan: list[str]) -> list[str]:
    """Redirect TCP and DNS into Tor; Tor itself, local and LAN destinations pass untouched."""
    # ipv6 = "torify": IPv6 takes the same path, to tor's listeners on [::1] (redirect
    # works for locally generated IPv6); otherwise it is left to the filter, which refuses it.
    six = p.torify_ipv6 and p.virtual_network6 is not None
    rules = [
        f"meta skuid {p.tor_uid} return",
        *bypass(p, "return"),  # a deliberate hole: not redirected, DNS included (IPv6 too)
        *(() if six else ("meta nfproto != ipv4 return",)),
        f"udp dport 53 counter name dns_redirected redirect to :{p.dns_port}",
        f"ip daddr {p.virtual_network} meta l4proto tcp counter name tcp_torified "
        f"redirect to :{p.trans_port}",
        *((f"ip6 daddr {p.virtual_network6} meta l4proto tcp counter name tcp_torified "
           f"redirect to :{p.trans_port}",) if six else ()),
        "fib daddr type local return",
        *(f"{m} return" for m in lan if six or m.startswith("ip ")),
        f"meta l4proto tcp counter name tcp_torified redirect to :{p.trans_port}",
    ]
    return _chain(
        NFT_NAT, f"type nat hook output priority {NAT_PRIORITY}; policy accept;", rules
    )


def _output(p: Policy, lan: list[str]) -> list[str]:
    """Only Tor's own traffic, loopback and (allow_lan) the LAN leave; the rest is refused
    (and logged for `watch`)."""
    admin = "reject with icmpx type admin-prohibited"
    rules = [
        *_refuse("ct state invalid", "blocked_invalid", "drop"),
        *(r for f in BAD_TCP_FLAGS for r in _refuse(tcp_flags(*f), "blocked_invalid", "drop")),
        # A datagram shorter than a DNS header crashes tor 0.4.9 (libevent #1231): any local
        # user could keep Tor down. Matched after the redirect, so it covers all of UDP 53.
        *_refuse(f"udp dport {p.dns_port} udp length < 20", "blocked_invalid", "drop"),
        "oifname \"lo\" accept",
        "ip daddr 127.0.0.0/8 accept",
        "ip6 daddr ::1 accept",
        *gateway.output_rules(p),
        # Only packets with Tor's socket owner: its TIME_WAIT ACKs carry none and are refused.
        # Marking Tor's flows in conntrack would let them out, but trusts a mark bit that any
        # other software's --save-mark may set too.
        f"meta skuid {p.tor_uid} meta nfproto ipv4 accept",
        # The bypass accounts go direct, IPv6 too (with ipv6 = "disable" there is none).
        *bypass(p, "accept"),
        *(() if p.block_incoming else ("ct direction reply accept",)),
        *_refuse(f"ip daddr {p.virtual_network}", "blocked_other", admin),
        *(_refuse(f"ip6 daddr {p.virtual_network6}", "blocked_other", admin)
          if p.torify_ipv6 and p.virtual_network6 is not None else ()),
        *_refuse("th dport 53", "blocked_dns", admin),
    ]
    if p.allow_lan:
        rules += [*(f"{m} accept" for m in lan),
                  "ip daddr 255.255.255.255 udp sport 68 udp dport 67 accept"]
    if p.neighbour_discovery:
        rules.append(_nd())
    rules += [
        # TCP gets a reset, IPv6 included: an ICMP error makes connect() wait ~1 s for a retry.
        *_refuse("meta nfproto ipv6 meta l4proto tcp", "blocked_ipv6", "reject with tcp reset"),
        *_refuse("meta nfproto ipv6", "blocked_ipv6", admin),
        *_refuse("meta l4proto tcp", "blocked_tcp", "reject with tcp reset"),
        *_refuse("meta l4proto udp", "blocked_udp", admin),
        *_refuse("meta l4proto icmp", "blocked_icmp", admin),
        *_refuse("", "blocked_other", admin),
    ]
    return _filter(NFT_OUTPUT, "output", rules)


def _forward(p: Policy) -> list[str]:
    rules = [*gateway.forward_rules(p, _refuse),
             *_refuse("", "blocked_forward", "reject with icmpx type admin-prohibited")]
    return _filter(NFT_FORWARD, "forward", rules)


def _input(p: Policy) -> list[str]:
    """incoming = "block": only replies (and DHCP/ND for the LAN) come in. A gateway's rules
    come first, whatever `incoming` says."""
    first = gateway.input_rules(p, _refuse)
    if not p.block_incoming:
        if not first:
            return []
        return _chain(NFT_INPUT, f"type filter hook input priority {FILTER_PRIORITY}; "
                      "policy accept;", first)
    rules = [
        *first,
        "iifname \"lo\" accept",
        "ct state invalid drop",
        "ct state established,related accept",
    ]
    if p.allow_lan:
        rules.append("meta nfproto ipv4 udp sport 67 udp dport 68 accept")
    if p.neighbour_discovery:
        rules.append(_nd())
    rules.append("counter name blocked_incoming drop")
    return _filter(NFT_INPUT, "input", rules)


def table(p: Policy) -> str:
    """The full definition of our table (without the replace preamble)."""
    sets, lan = _lan_sets(p)
    lines = [f"table inet {TABLE} {{"]
    lines += [f"\tcounter {name} {{\n\t}}"
              for name in (*COUNTERS, *(gateway.COUNTERS if p.gateway else ()))]
    # LAN sets are rendered even when allow_lan is false: nat must still not torify LAN TCP
    # (the filter then refuses it), so a LAN host never sees it arrive from a Tor exit.
    lines += sets + gateway.set_lines(p)
    lines += gateway.prerouting(p, NAT_PRIORITY)
    lines += _nat(p, lan) + _output(p, lan) + _forward(p) + _input(p) + guard.inet_chains(p)
    lines.append("}")
    return "\n".join(lines) + "\n"


def _preamble() -> str:
    # `table … {}` then `delete table …`: works whether or not the table exists, in the same
    # transaction as the new definition (nft 1.0.6 has no `destroy`).
    return f"table inet {TABLE} {{}}\ndelete table inet {TABLE}\n"


def render(p: Policy, *, replace: bool = True,
           replace_guard: bool | None = None) -> tuple[Script, ...]:
    """replace=False: for a kernel known to have no table of ours (the preamble's `delete
    table` is the slowest part of a commit, 13-20 ms). replace_guard: the same for `table
    netdev netspectre` (None: replace it when the guard is on). Both tables are one commit."""
    sets, lan = _lan_sets(p)
    text = (_preamble() if replace else "") + (
        guard.preamble() if (p.raw_guard if replace_guard is None else replace_guard) else "")
    return (Script(ARGV, text + table(p) + guard.netdev_table(p, sets, lan)),)


def render_guard(p: Policy) -> tuple[Script, ...]:
    """Only `table netdev netspectre`, replaced (the guard's watcher, for new interfaces)."""
    sets, lan = _lan_sets(p)
    return (Script(ARGV, guard.preamble() + guard.netdev_table(p, sets, lan)),)


def teardown() -> tuple[Script, ...]:
    """The inet table, then the guard's netdev table (run only where it exists)."""
    return (Script(ARGV, _preamble()), Script(ARGV, guard.preamble()))


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
