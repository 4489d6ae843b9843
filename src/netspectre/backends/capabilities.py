"""What the iptables backends cannot render yet, refused before anything changes. Pure."""

from __future__ import annotations

from typing import TYPE_CHECKING

from netspectre.errors import ConfigError

if TYPE_CHECKING:
    from netspectre.policy import Policy


def unsupported(p: Policy) -> str:
    """What of the policy these backends cannot render ("" when nothing): [gateway] and
    ipv6 = "torify" are nft only for now (README, known limits)."""
    wanted = [*(("[gateway] interfaces",) if p.gateway else ()),
              *(('ipv6 = "torify"',) if p.torify_ipv6 else ())]
    return " and ".join(wanted)


def refuse_unsupported(p: Policy, backend: str) -> None:
    missing = unsupported(p)
    if missing:
        raise ConfigError(f"the {backend} backend cannot do {missing} yet",
                          'use [firewall] backend = "nft" (or "auto" where nft is installed); '
                          "nothing was changed")
