"""The bypass accounts (issue 10) as nft owner matches, shared by the inet table (nft.py) and
the guard's netdev table (guard.py). Pure."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from netspectre.policy import Policy


def one_or_set(values: tuple[int, ...]) -> str:
    """`1000` or `{ 1000, 1001 }`: an nft value or an anonymous set."""
    return str(values[0]) if len(values) == 1 else "{ " + ", ".join(map(str, values)) + " }"


def bypass(p: Policy, verdict: str) -> list[str]:
    """By socket owner uid, and by the socket's gid: the opener's fsgid (= egid), never a
    supplementary group, which is why `netspectre bypass` runs its command with that egid."""
    return [*((f"meta skuid {one_or_set(p.bypass_uids)} {verdict}",) if p.bypass_uids else ()),
            *((f"meta skgid {one_or_set(p.bypass_gids)} {verdict}",) if p.bypass_gids else ())]
