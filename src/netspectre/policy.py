"""Config + HostFacts → Policy: the one value every backend renders. Pure."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from netspectre.config import Config, Incoming, Ipv6Mode, RawGuard

SUMMARY_LAN = 16


@dataclass(frozen=True)
class HostFacts:
    """What we probed on the host (or were told, for `rules` and tests)."""

    tor_uid: int
    tor_user: str
    # The raw guard (#12): every interface but lo, read at apply time, and why the guard cannot
    # be used here ("" when it can). Offline (rules, tests) nothing is probed: no guard.
    devices: tuple[str, ...] = ()
    guard_unsupported: str = "not probed"
    # [firewall] bypass_users / bypass_groups resolved: ((name, uid), …), ((name, gid), …).
    bypass_users: tuple[tuple[str, int], ...] = ()
    bypass_groups: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class Policy:
    tor_uid: int
    tor_user: str
    trans_port: int
    dns_port: int
    virtual_network: ipaddress.IPv4Network
    lan4: tuple[str, ...]  # canonical CIDRs, deduplicated, sorted
    lan6: tuple[str, ...]
    allow_lan: bool
    block_incoming: bool
    disable_ipv6: bool
    raw_guard: bool = False
    raw_guard_mark: int = 0
    # Interfaces at apply time; the guard's watcher follows later ones (not in the digest).
    guard_devices: tuple[str, ...] = ()
    raw_guard_off: str = ""  # why the guard is off ("" when on)
    # Sockets of these accounts go direct (issue 10): ((name, uid), …) and ((name, gid), …).
    bypass_users: tuple[tuple[str, int], ...] = ()
    bypass_groups: tuple[tuple[str, int], ...] = ()

    @property
    def neighbour_discovery(self) -> bool:
        """ICMPv6 ND out and in: for IPv6 LAN ranges, or bypassed IPv6 (ipv6 = "block")."""
        return (self.allow_lan and bool(self.lan6)) or (
            bool(self.bypass_users or self.bypass_groups) and not self.disable_ipv6)

    @property
    def bypass_uids(self) -> tuple[int, ...]:
        return tuple(sorted({uid for _, uid in self.bypass_users}))

    @property
    def bypass_gids(self) -> tuple[int, ...]:
        return tuple(sorted({gid for _, gid in self.bypass_groups}))

    def summary(self) -> dict[str, object]:
        return {
            "tor_user": self.tor_user,
            "tor_uid": self.tor_uid,
            "trans_port": self.trans_port,
            "dns_port": self.dns_port,
            "virtual_network": str(self.virtual_network),
            # Users list thousands of ranges: state and status keep the first few and the count.
            "lan": [*self.lan4, *self.lan6][:SUMMARY_LAN],
            "lan_count": len(self.lan4) + len(self.lan6),
            "allow_lan": self.allow_lan,
            "incoming": "block" if self.block_incoming else "allow",
            "ipv6": "disable" if self.disable_ipv6 else "block",
            "raw_guard": "on" if self.raw_guard else "off",
            "raw_guard_mark": f"{self.raw_guard_mark:#x}",
            "raw_guard_devices": list(self.guard_devices),
            "raw_guard_off": self.raw_guard_off,
            # Only when configured: a state recorded before bypasses existed still compares.
            **({"bypass_users": [{"name": n, "uid": u} for n, u in self.bypass_users]}
               if self.bypass_users else {}),
            **({"bypass_groups": [{"name": n, "gid": g} for n, g in self.bypass_groups]}
               if self.bypass_groups else {}),
        }


def build(config: Config, facts: HostFacts) -> Policy:
    """The policy for this config on this host."""
    fw = config.firewall
    unique = tuple(dict.fromkeys(fw.lan))  # deduplicated, in the config's order
    lan4 = tuple(n for n in unique if ":" not in n)
    lan6 = tuple(n for n in unique if ":" in n)
    off = guard_off(config, facts)
    return Policy(
        tor_uid=facts.tor_uid,
        tor_user=facts.tor_user,
        trans_port=config.tor.trans_port,
        dns_port=config.tor.dns_port,
        virtual_network=config.tor.virtual_network,
        lan4=lan4,
        lan6=lan6,
        allow_lan=fw.allow_lan,
        block_incoming=fw.incoming is Incoming.BLOCK,
        disable_ipv6=fw.ipv6 is Ipv6Mode.DISABLE,
        raw_guard=not off,
        raw_guard_mark=fw.raw_guard_mark,
        guard_devices=facts.devices if not off else (),
        raw_guard_off=off,
        bypass_users=facts.bypass_users,
        bypass_groups=facts.bypass_groups,
    )


def guard_off(config: Config, facts: HostFacts) -> str:
    """Why the raw guard is off ("" when on). `raw_guard = "on"` on a host that cannot is
    refused by start (lifecycle), not here: a policy is a value, never an error."""
    if config.firewall.raw_guard is RawGuard.OFF:
        return 'raw_guard = "off"'
    return facts.guard_unsupported
