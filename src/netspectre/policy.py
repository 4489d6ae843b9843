"""Config + HostFacts → Policy: the one value every backend renders. Pure."""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass

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
    # IPv6 on this host (/proc/net/if_inet6: absent with ipv6.disable=1) and ::1 on lo (absent
    # with lo's disable_ipv6): tor cannot bind [::] / [::1] listeners without them. Offline
    # (rules, tests) both are assumed.
    ipv6_stack: bool = True
    ipv6_loopback: bool = True
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
    # ipv6 = "torify": IPv6 TCP and DNS to Tor on [::1] (disable_ipv6 and this never both).
    torify_ipv6: bool = False
    virtual_network6: ipaddress.IPv6Network | None = None  # set with torify or a gateway
    # [gateway]: interface names (matched by name, present or not) and tor's ports for them.
    gateway: tuple[str, ...] = ()
    gateway_trans_port: int = 0
    gateway_dns_port: int = 0
    # Sockets of these accounts go direct (issue 10): ((name, uid), …) and ((name, gid), …).
    bypass_users: tuple[tuple[str, int], ...] = ()
    bypass_groups: tuple[tuple[str, int], ...] = ()

    @property
    def ipv6_mode(self) -> str:
        return "disable" if self.disable_ipv6 else "torify" if self.torify_ipv6 else "block"

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
            "ipv6": self.ipv6_mode,
            "raw_guard": "on" if self.raw_guard else "off",
            "raw_guard_mark": f"{self.raw_guard_mark:#x}",
            "raw_guard_devices": list(self.guard_devices),
            "raw_guard_off": self.raw_guard_off,
            # Only for configs that use them: older configs keep the summary they had.
            **({"virtual_network6": str(self.virtual_network6)}
               if self.virtual_network6 is not None else {}),
            **({"gateway": {"interfaces": list(self.gateway),
                            "trans_port": self.gateway_trans_port,
                            "dns_port": self.gateway_dns_port}} if self.gateway else {}),
            # Only when configured: a state recorded before bypasses existed still compares.
            **({"bypass_users": [{"name": n, "uid": u} for n, u in self.bypass_users]}
               if self.bypass_users else {}),
            **({"bypass_groups": [{"name": n, "gid": g} for n, g in self.bypass_groups]}
               if self.bypass_groups else {}),
        }

    def digest_fields(self) -> dict[str, object]:
        """What the plan digest covers: every field but the guard's devices (a fact of the
        moment), and the IPv6/gateway/bypass fields only when set (older plans keep their
        digest)."""
        fields = asdict(self)
        fields.pop("guard_devices")
        for name, unset in NEW_FIELDS.items():
            if fields[name] == unset:
                del fields[name]
        return fields


# Fields added with #10 (bypass) and #11 (gateway, torify), and their value when a config does
# not use them.
NEW_FIELDS: dict[str, object] = {"torify_ipv6": False, "virtual_network6": None,
                                 "gateway": (), "gateway_trans_port": 0, "gateway_dns_port": 0,
                                 "bypass_users": (), "bypass_groups": ()}


def build(config: Config, facts: HostFacts) -> Policy:
    """The policy for this config on this host."""
    fw = config.firewall
    unique = tuple(dict.fromkeys(fw.lan))  # deduplicated, in the config's order
    lan4 = tuple(n for n in unique if ":" not in n)
    lan6 = tuple(n for n in unique if ":" in n)
    off = guard_off(config, facts)
    gw = config.gateway
    torify = fw.ipv6 is Ipv6Mode.TORIFY
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
        torify_ipv6=torify,
        virtual_network6=config.tor.virtual_network6 if torify or gw.interfaces else None,
        gateway=gw.interfaces,
        gateway_trans_port=gw.trans_port if gw.interfaces else 0,
        gateway_dns_port=gw.dns_port if gw.interfaces else 0,
        bypass_users=facts.bypass_users,
        bypass_groups=facts.bypass_groups,
    )


def guard_off(config: Config, facts: HostFacts) -> str:
    """Why the raw guard is off ("" when on). `raw_guard = "on"` on a host that cannot is
    refused by start (lifecycle), not here: a policy is a value, never an error."""
    if config.firewall.raw_guard is RawGuard.OFF:
        return 'raw_guard = "off"'
    return facts.guard_unsupported
