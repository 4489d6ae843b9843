"""TOML file + flags → Config (frozen, validated). Pure: parses text, touches nothing."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from netspectre import DEFAULT_CONFIG, backends
from netspectre import configvalues as values
from netspectre.backends import Backend
from netspectre.errors import ConfigError

DEFAULT_PATH = DEFAULT_CONFIG


class TorMode(StrEnum):
    MANAGED = "managed"
    SYSTEM = "system"


class BackendName(StrEnum):
    """`[firewall] backend`: a `backends.Backend`, or one chosen at run time (backends.CHOICES,
    in the same order; tests/unit/test_backends.py holds the two together)."""

    AUTO = backends.AUTO
    NFT = Backend.NFT.value
    IPTABLES = backends.SYSTEM_IPTABLES  # the system's iptables (whatever `iptables` points to)
    IPTABLES_NFT = Backend.IPTABLES_NFT.value
    IPTABLES_LEGACY = Backend.IPTABLES_LEGACY.value


class Ipv6Mode(StrEnum):
    DISABLE = "disable"
    BLOCK = "block"
    TORIFY = "torify"  # TCP and DNS over IPv6 through Tor on [::1], the rest refused


class Incoming(StrEnum):
    BLOCK = "block"
    ALLOW = "allow"


class RawGuard(StrEnum):
    """`[firewall] raw_guard`: the netdev-egress guard against raw packet sockets (#12)."""

    AUTO = "auto"  # on where the backend and the kernel can; status/doctor say why not
    ON = "on"  # start refuses without it
    OFF = "off"


# CIDR strings in canonical form: users list thousands of networks, and 10,000 ipaddress
# objects cost more than the whole nft commit (see bench/perf.py).
DEFAULT_LAN: tuple[str, ...] = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")


@dataclass(frozen=True)
class TorConfig:
    mode: TorMode = TorMode.MANAGED
    user: str = "auto"
    trans_port: int = 9040
    dns_port: int = 9053
    socks_port: int = 9060  # not 9050 (system tor) nor 9150 (Tor Browser)
    virtual_network: ipaddress.IPv4Network = ipaddress.IPv4Network("10.192.0.0/10")
    # VirtualAddrNetworkIPv6 (torify, gateway): a random ULA /48, in no default LAN range.
    virtual_network6: ipaddress.IPv6Network = ipaddress.IPv6Network(values.DEFAULT_VNET6)
    control: str = "/run/tor/control"  # system mode: the running tor's ControlSocket or host:port
    torrc_extra: tuple[str, ...] = ()
    bridges: tuple[str, ...] = ()
    bootstrap_timeout: float = 180.0


@dataclass(frozen=True)
class FirewallConfig:
    backend: BackendName = BackendName.AUTO
    lan: tuple[str, ...] = DEFAULT_LAN  # canonical CIDRs, IPv4 and IPv6
    allow_lan: bool = True
    ipv6: Ipv6Mode = Ipv6Mode.DISABLE
    incoming: Incoming = Incoming.BLOCK
    raw_guard: RawGuard = RawGuard.AUTO
    raw_guard_mark: int = values.DEFAULT_GUARD_MARK
    # Accounts whose sockets go direct, never torified (issue 10): a hole by design. Names,
    # resolved to uid/gid at start (facts.py); a group matches the socket's primary gid.
    bypass_users: tuple[str, ...] = ()
    bypass_groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class GatewayConfig:
    """`[gateway]`: interfaces whose clients (containers, VMs, a LAN) are torified (#11)."""

    interfaces: tuple[str, ...] = ()
    trans_port: int = 9041  # tor's TransPort for them, on 0.0.0.0 and [::]
    dns_port: int = 9054  # tor's DNSPort for them, on 0.0.0.0 and [::]


DEFAULT_CHECK_URL = "https://check.torproject.org/api/ip"


@dataclass(frozen=True)
class CheckConfig:
    url: str = DEFAULT_CHECK_URL
    fallbacks: tuple[str, ...] = ()
    timeout: float = 30.0


@dataclass(frozen=True)
class VerifyConfig:
    """Where `netspectre verify` fires its leak probes. Documentation ranges by default: they
    are never routed on the Internet, so a probe that escapes still reaches nobody."""

    target4: str = "198.51.100.1"
    target6: str = "2001:db8::1"
    lan_dns: tuple[str, ...] = ()  # LAN resolvers to probe (a DNS query must still go to Tor)
    timeout: float = 3.0


@dataclass(frozen=True)
class Config:
    tor: TorConfig = field(default_factory=TorConfig)
    firewall: FirewallConfig = field(default_factory=FirewallConfig)
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    check: CheckConfig = field(default_factory=CheckConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    path: str | None = None
    # The raw [lab] table: lab/spec.py's from_mapping validates it (only `netspectre lab` reads it).
    lab: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


def parse(text: str, *, path: str | None = None) -> Config:
    """Parse and validate TOML text into a Config; raise ConfigError naming the bad key."""
    import tomllib

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{path or 'config'}: not valid TOML: {exc}", "check the file's syntax"
        ) from None
    return from_dict(data, path=path)


def from_dict(data: dict[str, Any], *, path: str | None = None) -> Config:
    values.known_keys("", data, {"tor", "firewall", "gateway", "check", "verify", "lab"})
    tor = _tor(values.table("tor", data))
    firewall = _firewall(values.table("firewall", data))
    gateway = _gateway(values.table("gateway", data), tor)
    _check_vnet6(tor, firewall, gateway)
    return Config(
        tor=tor,
        firewall=firewall,
        gateway=gateway,
        check=_check(values.table("check", data)),
        verify=_verify(values.table("verify", data)),
        path=path,
        lab=dict(values.table("lab", data)),
    )


def _tor(t: dict[str, Any]) -> TorConfig:
    values.known_keys("tor", t, {"mode", "user", "trans_port", "dns_port", "socks_port",
                                 "virtual_network", "virtual_network6", "control",
                                 "torrc_extra", "bridges", "bootstrap_timeout"})
    d = TorConfig()
    vnet = values.network("tor.virtual_network", t.get("virtual_network", str(d.virtual_network)))
    if not isinstance(vnet, ipaddress.IPv4Network):
        raise values.bad("tor.virtual_network", t["virtual_network"], "must be an IPv4 network")
    if vnet.prefixlen > 16:
        raise values.bad(
            "tor.virtual_network", t["virtual_network"], "too small (need /16 or larger)"
        )
    cfg = TorConfig(
        mode=values.member("tor.mode", t.get("mode", d.mode.value), TorMode),
        user=values.user("tor.user", t.get("user", d.user)),
        trans_port=values.port("tor.trans_port", t.get("trans_port", d.trans_port)),
        dns_port=values.port("tor.dns_port", t.get("dns_port", d.dns_port)),
        socks_port=values.port("tor.socks_port", t.get("socks_port", d.socks_port)),
        virtual_network=vnet,
        virtual_network6=values.network6(
            "tor.virtual_network6", t.get("virtual_network6", str(d.virtual_network6))),
        control=values.string("tor.control", t.get("control", d.control)),
        torrc_extra=tuple(
            values.torrc_line("tor.torrc_extra", x)
            for x in values.strings("tor.torrc_extra", t.get("torrc_extra", []))
        ),
        bridges=values.strings("tor.bridges", t.get("bridges", [])),
        bootstrap_timeout=values.number(
            "tor.bootstrap_timeout", t.get("bootstrap_timeout", d.bootstrap_timeout), minimum=1
        ),
    )
    ports = {"tor.trans_port": cfg.trans_port, "tor.dns_port": cfg.dns_port,
             "tor.socks_port": cfg.socks_port}
    if len(set(ports.values())) != len(ports):
        raise ConfigError(
            "tor.trans_port, tor.dns_port and tor.socks_port must differ "
            f"(got {cfg.trans_port}, {cfg.dns_port}, {cfg.socks_port})"
        )
    return cfg


def _firewall(f: dict[str, Any]) -> FirewallConfig:
    values.known_keys("firewall", f, {"backend", "lan", "allow_lan", "ipv6", "incoming",
                                      "raw_guard", "raw_guard_mark", "bypass_users",
                                      "bypass_groups"})
    d = FirewallConfig()
    lan_raw = f.get("lan", [str(n) for n in d.lan])
    if not isinstance(lan_raw, list):
        raise values.bad("firewall.lan", lan_raw, "must be a list of CIDR strings")
    return FirewallConfig(
        backend=values.member("firewall.backend", f.get("backend", d.backend.value), BackendName),
        lan=tuple(values.cidr("firewall.lan", x) for x in lan_raw),
        allow_lan=values.boolean("firewall.allow_lan", f.get("allow_lan", d.allow_lan)),
        ipv6=values.member("firewall.ipv6", f.get("ipv6", d.ipv6.value), Ipv6Mode),
        incoming=values.member("firewall.incoming", f.get("incoming", d.incoming.value), Incoming),
        raw_guard=values.member("firewall.raw_guard", f.get("raw_guard", d.raw_guard.value),
                                RawGuard),
        raw_guard_mark=values.mark_bit("firewall.raw_guard_mark",
                                       f.get("raw_guard_mark", d.raw_guard_mark)),
        bypass_users=values.names("firewall.bypass_users", f.get("bypass_users", [])),
        bypass_groups=values.names("firewall.bypass_groups", f.get("bypass_groups", [])),
    )


def _gateway(g: dict[str, Any], tor: TorConfig) -> GatewayConfig:
    values.known_keys("gateway", g, {"interfaces", "trans_port", "dns_port"})
    d = GatewayConfig()
    cfg = GatewayConfig(
        interfaces=tuple(dict.fromkeys(values.ifname("gateway.interfaces", x) for x in
                                       values.strings("gateway.interfaces",
                                                      g.get("interfaces", [])))),
        trans_port=values.port("gateway.trans_port", g.get("trans_port", d.trans_port)),
        dns_port=values.port("gateway.dns_port", g.get("dns_port", d.dns_port)),
    )
    if not cfg.interfaces:
        return cfg  # ports of no gateway clash with nothing
    taken = {tor.trans_port: "tor.trans_port", tor.dns_port: "tor.dns_port",
             tor.socks_port: "tor.socks_port"}
    for key, value in (("gateway.trans_port", cfg.trans_port),
                       ("gateway.dns_port", cfg.dns_port)):
        if value in taken:
            raise values.bad(key, value, f"the same port as {taken[value]}",
                             "the gateway's listeners need ports of their own")
        taken[value] = key
    return cfg


def _check_vnet6(tor: TorConfig, fw: FirewallConfig, gw: GatewayConfig) -> None:
    """VirtualAddrNetworkIPv6 is used with ipv6 = "torify" or a gateway: it must not overlap
    a LAN range (a .onion address would then be the LAN's, and reach it directly)."""
    if fw.ipv6 is not Ipv6Mode.TORIFY and not gw.interfaces:
        return
    vnet6 = tor.virtual_network6
    for cidr in fw.lan:
        if ":" in cidr and vnet6.overlaps(ipaddress.IPv6Network(cidr)):
            raise ConfigError(
                f"tor.virtual_network6 = {str(vnet6)!r} overlaps firewall.lan {cidr!r}",
                f"pick a virtual_network6 outside every LAN range (the default is "
                f"{values.DEFAULT_VNET6}); nothing was changed")


def _check(c: dict[str, Any]) -> CheckConfig:
    values.known_keys("check", c, {"url", "fallbacks", "timeout"})
    d = CheckConfig()
    return CheckConfig(
        url=values.url("check.url", c.get("url", d.url)),
        fallbacks=tuple(values.url("check.fallbacks", u) for u in values.strings(
            "check.fallbacks", c.get("fallbacks", list(d.fallbacks)))),
        timeout=values.number("check.timeout", c.get("timeout", d.timeout), minimum=0.1),
    )


def _verify(v: dict[str, Any]) -> VerifyConfig:
    values.known_keys("verify", v, {"target4", "target6", "lan_dns", "timeout"})
    d = VerifyConfig()
    return VerifyConfig(
        target4=values.address("verify.target4", v.get("target4", d.target4), socket.AF_INET),
        target6=values.address("verify.target6", v.get("target6", d.target6), socket.AF_INET6),
        lan_dns=tuple(values.address("verify.lan_dns", a, socket.AF_INET)
                      for a in values.strings("verify.lan_dns", v.get("lan_dns", []))),
        timeout=values.number("verify.timeout", v.get("timeout", d.timeout), minimum=0.1),
    )


def load(path: str | None) -> Config:
    """Read and parse the config file; the default path may be absent (defaults apply)."""
    target = path or DEFAULT_PATH
    try:
        with open(target, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        if path is None:
            return Config()
        raise ConfigError(f"config file {target} not found", "check the --config path") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config {target}: {exc.strerror}") from None
    return parse(text, path=target)
