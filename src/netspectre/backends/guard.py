"""The raw-socket guard (issue 12): what nft renders for it. Pure. (Stub: renders nothing yet.)"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from netspectre.policy import Policy


def inet_chains(p: Policy) -> list[str]:
    """Chains of `table inet netspectre` the guard needs (the mark on what our rules passed)."""
    return []
