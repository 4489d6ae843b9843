"""HostFacts gathered from this host (the tor account), for policy and plan."""

from __future__ import annotations

from netspectre.config import Config
from netspectre.policy import HostFacts
from netspectre.tor import users


def gather(config: Config) -> HostFacts:
    name, uid = users.resolve(config.tor.user)
    return HostFacts(tor_uid=uid, tor_user=name)
