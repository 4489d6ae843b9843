"""The raw-socket guard (issue 12): what nft renders for it. Pure.

Raw `AF_PACKET` sockets bypass netfilter's IP hooks, so `table inet netspectre` never sees
their frames. The guard has two halves: a postrouting chain in our inet table puts one mark
bit on every packet our rules let out, and `table netdev netspectre` has one egress chain per
interface (the last hook before the driver, which AF_PACKET frames also pass, with or without
PACKET_QDISC_BYPASS) that drops whatever does not carry the bit. Since kernel 5.17 a process
with CAP_NET_RAW may set SO_MARK itself, so the bit alone is not enough: a marked packet must
also belong to Tor's socket owner (or a bypass account's, issue 10), or go to the LAN
(allow_lan). ARP, the DHCPv4 client's broadcast and (with IPv6 on) neighbour/router
solicitation pass unmarked: the LAN needs them and they are sent without IP rules.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from netspectre.backends import gateway
from netspectre.backends.owners import bypass

if TYPE_CHECKING:
    from netspectre.policy import Policy

TABLE = "netspectre"  # `table netdev netspectre`, found by name like the inet table
MARK_CHAIN = "guard_mark"
COUNTER = "blocked_raw"
# Egress priority: filter (0). Our drop is final whatever other egress chains do.
PRIORITY = 0
# Neighbour discovery the kernel sends for itself (router and neighbour solicitation, our
# advertisements as answers); with IPv6 disabled none is needed.
ND_OUT = ("nd-router-solicit", "nd-neighbor-solicit", "nd-neighbor-advert")
# One egress chain per interface: the kernel attaches a chain naming a device when it appears,
# but a wildcard name ("w*") is accepted by nft 1.0.6 and matches nothing (a silent
# fail-open), so only exact names are ever rendered.
NOT_A_NAME = re.compile(r'[\s"\\/*?\[\]]')


def inet_chains(p: Policy) -> list[str]:
    """Chains of `table inet netspectre` the guard needs (the mark on what our rules passed)."""
    if not p.raw_guard:
        return []
    return [f"\tchain {MARK_CHAIN} {{",
            f"\t\ttype filter hook postrouting priority {PRIORITY}; policy accept;",
            f"\t\tmeta mark set meta mark | {p.raw_guard_mark:#010x}",
            "\t}"]


def guardable(device: str) -> bool:
    """A name nft can attach to exactly (no wildcard, nothing to quote), and not loopback."""
    return bool(device) and device != "lo" and len(device) < 16 and not NOT_A_NAME.search(device)


def chain_name(device: str) -> str:
    return "egress_" + re.sub(r"[^A-Za-z0-9_]", "_", device)


def _rules(p: Policy, lan: list[str], device: str = "") -> list[str]:
    marked = f"meta mark & {p.raw_guard_mark:#010x} == {p.raw_guard_mark:#010x}"
    rules = ["meta protocol arp accept",
             *(gateway.guard_rules(p, marked) if device in p.gateway else ()),
             # Tor is the one owner whose packets may reach the Internet (IPv4 only).
             f"{marked} meta protocol ip meta skuid {p.tor_uid} accept"]
    # The bypass accounts' packets were let out by the inet table (so marked): they pass too.
    rules += [f"{marked} {r}" for r in bypass(p, "accept")]
    if not p.block_incoming:
        # Replies to inbound connections come from any socket: with incoming = "allow" the
        # bit alone lets them out (a forged SO_MARK is then not refused; README known limits).
        rules.append(f"{marked} accept")
    if p.allow_lan:
        rules += [f"{marked} {m} accept" for m in lan]
    rules.append("meta protocol ip ip daddr 255.255.255.255 udp sport 68 udp dport 67 accept")
    if not p.disable_ipv6:
        rules.append(f"icmpv6 type {{ {', '.join(ND_OUT)} }} accept")
    rules.append(f"counter name {COUNTER} drop")
    return rules


def netdev_chains(p: Policy, lan: list[str]) -> list[str]:
    """One egress chain per guarded interface, each with the same rules."""
    lines: list[str] = []
    seen: set[str] = set()
    for device in p.guard_devices:
        if not guardable(device):
            continue
        name = chain_name(device)
        while name in seen:
            name += "_"
        seen.add(name)
        lines += [f"\tchain {name} {{",
                  f'\t\ttype filter hook egress device "{device}" priority {PRIORITY}; '
                  "policy drop;",
                  *(f"\t\t{r}" for r in _rules(p, lan, device)), "\t}"]
    return lines


def netdev_table(p: Policy, sets: list[str], lan: list[str]) -> str:
    """The full definition of `table netdev netspectre` ("" when the guard is off). `sets`
    and `lan` are the inet table's LAN sets and matches: sets belong to one table, so the
    netdev table declares its own copy."""
    if not p.raw_guard:
        return ""
    lines = [f"table netdev {TABLE} {{", f"\tcounter {COUNTER} {{\n\t}}"]
    if p.allow_lan:
        lines += sets
    lines += netdev_chains(p, lan)
    lines.append("}")
    return "\n".join(lines) + "\n"


def preamble() -> str:
    """Replace-or-create, as for the inet table (nft 1.0.6 has no `destroy`)."""
    return f"table netdev {TABLE} {{}}\ndelete table netdev {TABLE}\n"


def guarded(listing: str) -> tuple[str, ...]:
    """Devices with an egress chain of ours in `nft list table netdev netspectre`."""
    return tuple(sorted(set(re.findall(r'hook egress device "?([^";\s]+)"? priority',
                                       listing))))
