"""LabSpec (what the user asks for: names, ranges, relay counts) and Layout (every address derived
from it). Pure: no system access; the host-route overlap check lives in lab/network.py.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from netspectre.errors import ConfigError

IPv4Address = ipaddress.IPv4Address
IPv6Address = ipaddress.IPv6Address
IPv4Network = ipaddress.IPv4Network
IPv6Network = ipaddress.IPv6Network

OR_PORT = 9001
DIR_PORT = 9030
WEB_PORT = 80
DNS_PORT = 53
ECHO_NAME = "echo.test"  # the lab's DNS answers it with the web server's addresses
ONION_PORT = 80
OBFS4_PORT = 9443  # the bridge's obfs4 listener (its ORPort is OR_PORT, never used by clients)

RUN_ROOT = Path("/run/netspectre-lab")


@dataclass(frozen=True)
class LabSpec:
    """Defaults use only documentation ranges (RFC 5737 TEST-NET-2/3, RFC 3849)."""

    prefix: str = "nslab-"
    internet4: IPv4Network = IPv4Network("203.0.113.0/24")  # relays, web and DNS servers
    lan4: IPv4Network = IPv4Network("198.51.100.0/24")  # client uplink (low half), guest (high)
    internet6: IPv6Network = IPv6Network("2001:db8:4c41::/64")
    # first /64 uplink, second guest, third the containers' bridge
    lan6: IPv6Network = IPv6Network("2001:db8:4c41:100::/56")
    middles: int = 1
    exits: int = 2  # two, so concurrent clients can be shown on different circuits
    containers: int = 2  # "containers" on a docker0-like bridge in the client namespace
    run_root: Path = RUN_ROOT

    @property
    def inet_ns(self) -> str:
        return f"{self.prefix}inet"

    @property
    def client_ns(self) -> str:
        return f"{self.prefix}client"

    @property
    def guest_ns(self) -> str:
        return f"{self.prefix}guest"

    @property
    def container_ns(self) -> tuple[str, ...]:
        return tuple(f"{self.prefix}ct{i}" for i in range(1, self.containers + 1))

    @property
    def namespaces(self) -> tuple[str, ...]:
        return (self.inet_ns, self.client_ns, self.guest_ns, *self.container_ns)

    @property
    def dir(self) -> Path:
        return self.run_root / self.prefix.rstrip("-")

    def networks(self) -> tuple[IPv4Network | IPv6Network, ...]:
        return (self.internet4, self.lan4, self.internet6, self.lan6)


_PREFIX = re.compile(r"^[a-z][a-z0-9]{0,11}-$")


def validate(spec: LabSpec) -> LabSpec:
    """Check what can be checked without the system; return the spec unchanged."""
    if not _PREFIX.match(spec.prefix):
        raise ConfigError(
            f"invalid lab prefix {spec.prefix!r}",
            "use 1-12 lowercase letters or digits followed by '-', e.g. 'nslab-'",
        )
    sizes = (
        ("internet4", spec.internet4, 24),
        ("lan4", spec.lan4, 24),
        ("internet6", spec.internet6, 64),
        ("lan6", spec.lan6, 62),
    )
    for name, net, longest in sizes:
        if net.prefixlen > longest:
            raise ConfigError(
                f"lab range {name} = {net} is too small", f"use a /{longest} or larger"
            )
        if net.is_loopback or net.is_multicast or net.is_link_local or net.is_unspecified:
            raise ConfigError(f"lab range {name} = {net} is not a unicast range")
    nets = spec.networks()
    for i, a in enumerate(nets):
        for b in nets[i + 1 :]:
            if a.version == b.version and a.overlaps(b):
                raise ConfigError(f"lab ranges {a} and {b} overlap")
    for name, count, least in (("middles", spec.middles, 1), ("exits", spec.exits, 1),
                               ("containers", spec.containers, 0)):
        if not least <= count <= 9:
            raise ConfigError(f"lab {name} = {count}: must be between {least} and 9")
    return spec


def from_mapping(table: Mapping[str, Any]) -> LabSpec:
    """Build a LabSpec from a `[lab]` TOML table (keys as the field names); raise ConfigError."""
    d = LabSpec()
    known = {"prefix", "internet4", "lan4", "internet6", "lan6", "middles", "exits",
             "containers", "run_root"}
    for key in table:
        if key not in known:
            raise ConfigError(f"unknown key 'lab.{key}'", "known keys: " + ", ".join(sorted(known)))

    def net(key: str, version: int, default: IPv4Network | IPv6Network) -> Any:
        raw = table.get(key, str(default))
        try:
            value = ipaddress.ip_network(str(raw), strict=True)
        except ValueError as exc:
            raise ConfigError(f"invalid lab.{key} = {raw!r}: {exc}") from None
        if value.version != version:
            raise ConfigError(f"invalid lab.{key} = {raw!r}: must be an IPv{version} network")
        return value

    def count(key: str, default: int) -> int:
        raw = table.get(key, default)
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise ConfigError(f"invalid lab.{key} = {raw!r}: must be an integer")
        return raw

    prefix = table.get("prefix", d.prefix)
    if not isinstance(prefix, str):
        raise ConfigError(f"invalid lab.prefix = {prefix!r}: must be a string")
    return validate(
        LabSpec(
            prefix=prefix,
            internet4=net("internet4", 4, d.internet4),
            lan4=net("lan4", 4, d.lan4),
            internet6=net("internet6", 6, d.internet6),
            lan6=net("lan6", 6, d.lan6),
            middles=count("middles", d.middles),
            exits=count("exits", d.exits),
            containers=count("containers", d.containers),
            run_root=Path(str(table.get("run_root", d.run_root))),
        )
    )


class Role(StrEnum):
    AUTHORITY = "authority"
    MIDDLE = "middle"
    EXIT = "exit"
    BRIDGE = "bridge"  # unpublished: only a client given its bridge line uses it


@dataclass(frozen=True)
class Relay:
    nick: str
    role: Role
    v4: IPv4Address
    v6: IPv6Address
    or_port: int = OR_PORT
    dir_port: int | None = None


@dataclass(frozen=True)
class Container:
    """A namespace on the client's docker0-like bridge (CT_BRIDGE), routed through it."""

    ns: str
    v4: IPv4Address
    v6: IPv6Address


@dataclass(frozen=True)
class Layout:
    """Every address of the lab. Internet hosts sit on the internet namespace's loopback; the
    client reaches them through its uplink, whose far end (gateway) also answers as LAN resolver.
    """

    relays: tuple[Relay, ...]
    web4: IPv4Address
    web6: IPv6Address
    dns4: IPv4Address  # the exits' resolver, on the "internet"
    dns6: IPv6Address
    uplink4: IPv4Network
    uplink6: IPv6Network
    gateway4: IPv4Address
    gateway6: IPv6Address
    resolver4: IPv4Address  # the LAN resolver, next to the gateway
    resolver6: IPv6Address
    client4: IPv4Address
    client6: IPv6Address
    guestnet4: IPv4Network
    guestnet6: IPv6Network
    guest_gw4: IPv4Address  # the client's side of the guest link
    guest_gw6: IPv6Address
    guest4: IPv4Address
    guest6: IPv6Address
    bridge: Relay  # the obfs4 bridge (not in `relays`: not in the consensus)
    ctnet4: IPv4Network  # the containers' subnet, on the client's bridge
    ctnet6: IPv6Network
    ct_gw4: IPv4Address  # the bridge's own address: the containers' default route
    ct_gw6: IPv6Address
    containers: tuple[Container, ...]
    lan: tuple[IPv4Network | IPv6Network, ...] = field(default=())
    # `netspectre verify`'s probe targets: routed to the lab's internet, where nothing has them
    probe4: IPv4Address = IPv4Address("198.51.100.99")
    probe6: IPv6Address = IPv6Address("2001:db8::99")

    @property
    def authorities(self) -> tuple[Relay, ...]:
        return tuple(r for r in self.relays if r.role is Role.AUTHORITY)

    @property
    def exits(self) -> tuple[Relay, ...]:
        return tuple(r for r in self.relays if r.role is Role.EXIT)


def _host6(net: IPv6Network, n: int) -> IPv6Address:
    # Host n of a v6 range reads like the v4 one: 11 -> ::11, 80 -> ::80.
    return net[int(str(n), 16)]


def layout(spec: LabSpec) -> Layout:
    """Derive every address from the spec (deterministic)."""
    validate(spec)
    i4, i6 = spec.internet4, spec.internet6
    relays: list[Relay] = []
    for i in range(1, 4):
        relays.append(
            Relay(f"auth{i}", Role.AUTHORITY, i4[10 + i], _host6(i6, 10 + i), dir_port=DIR_PORT)
        )
    for i in range(1, spec.middles + 1):
        relays.append(Relay(f"middle{i}", Role.MIDDLE, i4[20 + i], _host6(i6, 20 + i)))
    for i in range(1, spec.exits + 1):
        relays.append(Relay(f"exit{i}", Role.EXIT, i4[30 + i], _host6(i6, 30 + i)))
    # lan4: the low half is the uplink, the high half holds the guest's and the containers'.
    up4, high = spec.lan4.subnets(prefixlen_diff=1)
    guest4, ct4 = high.subnets(prefixlen_diff=1)
    sub6 = spec.lan6.subnets(new_prefix=64)
    up6, guest6, ct6 = next(sub6), next(sub6), next(sub6)
    containers = tuple(Container(ns, ct4[1 + i], ct6[1 + i])
                       for i, ns in enumerate(spec.container_ns, start=1))
    return Layout(
        relays=tuple(relays),
        web4=i4[80],
        web6=_host6(i6, 80),
        dns4=i4[53],
        dns6=_host6(i6, 53),
        uplink4=up4,
        uplink6=up6,
        gateway4=up4[1],
        gateway6=up6[1],
        resolver4=up4[53],
        resolver6=_host6(up6, 53),
        client4=up4[2],
        client6=up6[2],
        guestnet4=guest4,
        guestnet6=guest6,
        guest_gw4=guest4[1],
        guest_gw6=guest6[1],
        guest4=guest4[2],
        guest6=guest6[2],
        bridge=Relay("bridge", Role.BRIDGE, i4[40], _host6(i6, 40)),
        ctnet4=ct4,
        ctnet6=ct6,
        ct_gw4=ct4[1],
        ct_gw6=ct6[1],
        containers=containers,
        lan=(spec.lan4, spec.lan6),
        probe4=i4[99],
        probe6=_host6(i6, 99),
    )
