"""Config + HostFacts → Plan: the Policy the firewall renders and the Tor it points at. Pure.

Derived once per `start`/`restart` and recorded in state (its digest, the Tor endpoints):
`status` and the others compare against the recording instead of re-reading the config.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass

from netspectre.config import Config, TorMode
from netspectre.paths import Paths
from netspectre.policy import HostFacts, Policy, build
from netspectre.tor import torrc
from netspectre.tor.record import Endpoints


@dataclass(frozen=True)
class Plan:
    policy: Policy
    endpoints: Endpoints
    torrc: str | None  # the managed tor's whole torrc; None for the system tor (not ours)

    @property
    def torrc_sha256(self) -> str:
        """What TorRecord.torrc_sha256 says when our tor runs with this plan's torrc."""
        return hashlib.sha256(self.torrc.encode()).hexdigest() if self.torrc is not None else ""

    def digest(self, *, firewall: bool = True) -> str:
        """Changes when anything `restart` would change does (rules, ports, the torrc).
        firewall=False: a Tor-only start (`--no-firewall`), whose rules are none."""
        if not firewall:
            text = json.dumps(["tor-only", asdict(self.endpoints), self.torrc],
                              sort_keys=True, default=str)
            return hashlib.sha256(text.encode()).hexdigest()
        # The guarded interfaces are a fact of the moment (the guard's watcher follows them):
        # a new USB tether is not a changed config.
        # No bypass, gateway or torify configured: the digest recorded before they existed.
        text = json.dumps([self.policy.digest_fields(), asdict(self.endpoints), self.torrc],
                          sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()


def derive(
    config: Config, facts: HostFacts, paths: Paths, *,
    which: Callable[[str], str | None] = lambda name: None,
) -> Plan:
    """`which` finds pluggable-transport binaries for the torrc (system.which in real use)."""
    text = (torrc.render(config, paths, facts, which=which)
            if config.tor.mode is TorMode.MANAGED else None)
    return Plan(policy=build(config, facts), endpoints=Endpoints.of(config), torrc=text)
