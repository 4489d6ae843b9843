"""The backends and the rule data every renderer shares, declared once as data. Pure.

Each renderer formats these values in its own syntax; none reads another's text.
"""

from __future__ import annotations

from enum import StrEnum


class Backend(StrEnum):
    """The firewall backends (re-exported as `netspectre.backends.Backend`)."""

    NFT = "nft"
    IPTABLES_NFT = "iptables-nft"
    IPTABLES_LEGACY = "iptables-legacy"


AUTO = "auto"  # nft if installed, else the system's iptables
SYSTEM_IPTABLES = "iptables"  # whichever flavour `iptables` is
# What `[firewall] backend` and `--backend` accept, in the order error messages list them.
CHOICES = (AUTO, Backend.NFT.value, SYSTEM_IPTABLES,
           *(b.value for b in Backend if b is not Backend.NFT))


# Tables and chains we own are recognised by these names/markers, never by a list in state.
TABLE = "netspectre"  # nft: `table inet netspectre`
MARKER = "netspectre"  # iptables: the comment on our jumps, "netspectre:<counter>" on counted rules

# nft chains in our table, in the order the table declares them.
NFT_NAT = "nat_output"
NFT_OUTPUT = "output"
NFT_FORWARD = "forward"
NFT_INPUT = "input"

# iptables: our own chains; one marked jump from a built-in chain leads into each.
IPT_NAT = "NETSPECTRE-NAT"
IPT_OUTPUT = "NETSPECTRE-OUT"
IPT_FORWARD = "NETSPECTRE-FWD"
IPT_INPUT = "NETSPECTRE-IN"
IPT_PREROUTING = "NETSPECTRE-PRE"  # [gateway] only
IPT_CHAINS = (IPT_NAT, IPT_OUTPUT, IPT_FORWARD, IPT_INPUT, IPT_PREROUTING)

# Our NAT runs at -190: after conntrack (-200), before mangle (-150) and before every
# iptables/docker NAT (-100). The first NAT chain that binds a connection wins, so nobody
# else's DNAT can claim a new connection before we redirect it.
NAT_PRIORITY = -190
# Filter at 0 like everyone else: a drop anywhere is final, an accept elsewhere cannot
# override ours, so the order against other filter tables does not matter.
FILTER_PRIORITY = 0

# The class of each named counter, the same words for every backend (status reports them).
COUNTERS = (
    "tcp_torified",
    "dns_redirected",
    "blocked_tcp",
    "blocked_udp",
    "blocked_icmp",
    "blocked_other",
    "blocked_ipv6",
    "blocked_invalid",
    "blocked_dns",
    "blocked_forward",
    "blocked_incoming",
)

# [gateway]'s counters, declared (nft) or rendered (iptables) only when a gateway is set, so
# older configs keep the counters (and status) they had.
GATEWAY_COUNTERS = ("gateway_torified", "gateway_dns", "gateway_refused")

# TCP flag combinations no real stack sends, as (mask, the flags of the mask that are set):
# the transproxy FIN/RST leak is caught by conntrack's INVALID state, these catch crafted
# packets that conntrack would still track. Lower-case names, in nft's order.
TCP_FLAGS = ("fin", "syn", "rst", "psh", "ack", "urg")
BAD_TCP_FLAGS: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (("fin", "syn"), ("fin", "syn")),
    (("syn", "rst"), ("syn", "rst")),
    (("fin", "rst"), ("fin", "rst")),
    (("fin", "ack"), ("fin",)),
    (("psh", "ack"), ("psh",)),
    (("urg", "ack"), ("urg",)),
    (TCP_FLAGS, ()),
)

# ICMPv6 neighbour discovery (name, type), needed only to reach IPv6 LAN ranges
# (ipv6 = "block" with allow_lan).
ND_TYPES: tuple[tuple[str, int], ...] = (
    ("nd-router-solicit", 133),
    ("nd-router-advert", 134),
    ("nd-neighbor-solicit", 135),
    ("nd-neighbor-advert", 136),
)

# Refused packets are also sent, rate-limited, to one nfnetlink_log group that `netspectre
# watch` reads (never to the kernel log). The log rule precedes its refusing rule and has no
# verdict: a limit in the refusing rule itself would let the packets over the limit fall through.
# Each log rule has its own bucket. The group is a u16; ulogd and most examples use 0-2.
LOG_GROUP = 4710
LOG_RATE = 10  # packets per second per refusing rule
LOG_BURST = 20  # packets
