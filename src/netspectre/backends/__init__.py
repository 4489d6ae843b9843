"""Rendered firewall scripts and the names of the backends that render them. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Backend(StrEnum):
    NFT = "nft"
    IPTABLES_NFT = "iptables-nft"
    IPTABLES_LEGACY = "iptables-legacy"


@dataclass(frozen=True)
class Script:
    """One atomic unit: `argv` reads `text` on stdin and commits it in one transaction."""

    argv: tuple[str, ...]
    text: str


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
