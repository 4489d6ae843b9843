"""The iptables renderers' rule text: chains, quoting, counted and refusing rules, TCP flag
sets, formatted exactly as iptables-save prints them. Pure (iptables.py and
iptables_gateway.py share it)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from netspectre.backends.names import (
    COUNTERS,
    GATEWAY_COUNTERS,
    LOG_BURST,
    LOG_GROUP,
    LOG_RATE,
    MARKER,
    TCP_FLAGS,
)

if TYPE_CHECKING:
    from netspectre.policy import Policy

# Characters iptables-save prints without quotes (xtables_save_string); we quote the same way
# so rendered rules read exactly like the saved ones.
_BARE = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class Chain:
    table: str
    name: str
    hook: str  # the built-in chain whose first rule jumps here
    rules: tuple[str, ...]  # rule specs, as iptables-save prints them after "-A NAME "


def quote(value: str) -> str:
    if _BARE.fullmatch(value):
        return value
    return '"' + re.sub(r'(["\\\'])', r"\\\1", value) + '"'


def rule(match: str, target: str, counter: str | None = None) -> str:
    if counter is not None:
        if counter not in (*COUNTERS, *GATEWAY_COUNTERS):
            raise ValueError(f"unknown counter {counter!r}")
        match = f"{match} -m comment --comment {quote(f'{MARKER}:{counter}')}".lstrip()
    return f"{match} -j {target}".lstrip()


def refuse(match: str, target: str, counter: str) -> list[str]:
    """A refusing rule, preceded by its rate-limited NFLOG rule (same match, no verdict: NFLOG
    is a non-terminating target), unmarked so it counts nowhere."""
    log = (f"{match} -m limit --limit {LOG_RATE}/sec --limit-burst {LOG_BURST} -j NFLOG "
           f"--nflog-prefix {quote(counter)} --nflog-group {LOG_GROUP}")
    return [log.lstrip(), rule(match, target, counter)]


def tcp_flags(mask: tuple[str, ...], comp: tuple[str, ...]) -> str:
    """One of names.BAD_TCP_FLAGS as `--tcp-flags MASK COMP`, flags in iptables-save's order."""

    def names(flags: tuple[str, ...]) -> str:
        return ",".join(f.upper() for f in TCP_FLAGS if f in flags) or "NONE"

    return f"-p tcp -m tcp --tcp-flags {names(mask)} {names(comp)}"


def bypass(p: Policy) -> list[str]:
    """The bypass accounts (issue 10): by owner uid, and by the socket's gid (fsgid = egid;
    no --suppl-groups, as nft's skgid). Right after Tor's own rule in the nat and filter
    OUTPUT chains of both families (so before the torify IPv6 redirect too)."""
    return [*(rule(f"-m owner --uid-owner {u}", "RETURN") for u in p.bypass_uids),
            *(rule(f"-m owner --gid-owner {g}", "RETURN") for g in p.bypass_gids)]
