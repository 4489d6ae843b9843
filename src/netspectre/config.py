"""TOML file + flags → Config (frozen, validated). Pure: parses text, touches nothing."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any

from netspectre import backends
from netspectre.backends import Backend
from netspectre.errors import ConfigError

DEFAULT_PATH = "/etc/netspectre/netspectre.toml"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


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


class Incoming(StrEnum):
    BLOCK = "block"
    ALLOW = "allow"


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
    check: CheckConfig = field(default_factory=CheckConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    path: str | None = None
    # The raw [lab] table: lab/spec.py's from_mapping validates it (only `netspectre lab` reads it).
    lab: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


def _bad(key: str, value: object, why: str, hint: str | None = None) -> ConfigError:
    return ConfigError(f"invalid {key} = {value!r}: {why}", hint)


def _port(key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(key, value, "must be an integer port")
    if not 1 <= value <= 65535:
        raise _bad(key, value, "port must be between 1 and 65535")
    return value


def _str(key: str, value: object) -> str:
    if not isinstance(value, str):
        raise _bad(key, value, f"must be a string, not {type(value).__name__}")
    return value


def _bool(key: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise _bad(key, value, "must be true or false")
    return value


def _number(key: str, value: object, *, minimum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(key, value, "must be a number")
    if value < minimum:
        raise _bad(key, value, f"must be at least {minimum}")
    return float(value)


def _enum(key: str, value: object, enum: type[Enum]) -> Any:
    choices = ", ".join(repr(m.value) for m in enum)
    if not isinstance(value, str):
        raise _bad(key, value, f"must be one of {choices}")
    try:
        return enum(value)
    except ValueError:
        raise _bad(key, value, f"must be one of {choices}") from None


def _strings(key: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _bad(key, value, "must be a list of strings")
    return tuple(value)


def _network(key: str, value: object) -> Network:
    text = _str(key, value)
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise _bad(key, value, f"not a CIDR network ({exc})") from None


def _cidr(key: str, value: object) -> str:
    """Validate a CIDR quickly (inet_pton); fall back to ipaddress for the error message."""
    text = _str(key, value)
    addr, slash, length = text.partition("/")
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    bits = 128 if family == socket.AF_INET6 else 32
    try:
        packed = socket.inet_pton(family, addr)
        prefix = int(length) if slash and length.isdigit() else -1
        if not 0 <= prefix <= bits or int.from_bytes(packed, "big") & ((1 << (bits - prefix)) - 1):
            raise ValueError
    except (OSError, ValueError):
        return str(_network(key, value))  # raises with ipaddress's explanation
    return f"{socket.inet_ntop(family, packed)}/{prefix}"


def _user(key: str, value: object) -> str:
    text = _str(key, value)
    if not text or not all(c.isalnum() or c in "_-." for c in text) or text[0] == "-":
        raise _bad(key, value, "not a valid account name")
    return text


def _torrc_line(key: str, line: str) -> str:
    if "\n" in line or "\r" in line or "\0" in line:
        raise _bad(key, line, "one torrc line per entry (no newlines)")
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        raise _bad(key, line, "empty lines and comments are not options")
    option = stripped.split()[0]
    if not option.replace("_", "").isalnum():
        raise _bad(key, line, f"{option!r} is not a torrc option name")
    return stripped


def _url(key: str, value: object) -> str:
    text = _str(key, value)
    if not (text.startswith("http://") or text.startswith("https://")) or len(text) < 10:
        raise _bad(key, value, "must be an http:// or https:// URL")
    return text


def _check_keys(section: str, table: dict[str, Any], known: set[str]) -> None:
    for key in table:
        if key not in known:
            where = f"{section}.{key}" if section else key
            raise ConfigError(
                f"unknown key {where!r}",
                f"known keys{' in [' + section + ']' if section else ''}: "
                + ", ".join(sorted(known)),
            )


def _table(section: str, data: dict[str, Any]) -> dict[str, Any]:
    value = data.get(section, {})
    if not isinstance(value, dict):
        raise _bad(section, value, "must be a table ([" + section + "])")
    return value


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
    _check_keys("", data, {"tor", "firewall", "check", "verify", "lab"})
    return Config(
        tor=_tor(_table("tor", data)),
        firewall=_firewall(_table("firewall", data)),
        check=_check(_table("check", data)),
        verify=_verify(_table("verify", data)),
        path=path,
        lab=dict(_table("lab", data)),
    )


def _tor(t: dict[str, Any]) -> TorConfig:
    _check_keys(
        "tor",
        t,
        {
            "mode", "user", "trans_port", "dns_port", "socks_port", "virtual_network",
            "control", "torrc_extra", "bridges", "bootstrap_timeout",
        },
    )
    d = TorConfig()
    vnet = _network("tor.virtual_network", t.get("virtual_network", str(d.virtual_network)))
    if not isinstance(vnet, ipaddress.IPv4Network):
        raise _bad("tor.virtual_network", t["virtual_network"], "must be an IPv4 network")
    if vnet.prefixlen > 16:
        raise _bad("tor.virtual_network", t["virtual_network"], "too small (need /16 or larger)")
    cfg = TorConfig(
        mode=_enum("tor.mode", t.get("mode", d.mode.value), TorMode),
        user=_user("tor.user", t.get("user", d.user)),
        trans_port=_port("tor.trans_port", t.get("trans_port", d.trans_port)),
        dns_port=_port("tor.dns_port", t.get("dns_port", d.dns_port)),
        socks_port=_port("tor.socks_port", t.get("socks_port", d.socks_port)),
        virtual_network=vnet,
        control=_str("tor.control", t.get("control", d.control)),
        torrc_extra=tuple(
            _torrc_line("tor.torrc_extra", x)
            for x in _strings("tor.torrc_extra", t.get("torrc_extra", []))
        ),
        bridges=_strings("tor.bridges", t.get("bridges", [])),
        bootstrap_timeout=_number(
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
    _check_keys("firewall", f, {"backend", "lan", "allow_lan", "ipv6", "incoming"})
    d = FirewallConfig()
    lan_raw = f.get("lan", [str(n) for n in d.lan])
    if not isinstance(lan_raw, list):
        raise _bad("firewall.lan", lan_raw, "must be a list of CIDR strings")
    return FirewallConfig(
        backend=_enum("firewall.backend", f.get("backend", d.backend.value), BackendName),
        lan=tuple(_cidr("firewall.lan", x) for x in lan_raw),
        allow_lan=_bool("firewall.allow_lan", f.get("allow_lan", d.allow_lan)),
        ipv6=_enum("firewall.ipv6", f.get("ipv6", d.ipv6.value), Ipv6Mode),
        incoming=_enum("firewall.incoming", f.get("incoming", d.incoming.value), Incoming),
    )


def _check(c: dict[str, Any]) -> CheckConfig:
    _check_keys("check", c, {"url", "fallbacks", "timeout"})
    d = CheckConfig()
    return CheckConfig(
        url=_url("check.url", c.get("url", d.url)),
        fallbacks=tuple(_url("check.fallbacks", u) for u in _strings(
            "check.fallbacks", c.get("fallbacks", list(d.fallbacks)))),
        timeout=_number("check.timeout", c.get("timeout", d.timeout), minimum=0.1),
    )


def _address(key: str, value: object, family: int) -> str:
    text = _str(key, value)
    try:
        return socket.inet_ntop(family, socket.inet_pton(family, text))
    except OSError:
        kind = "IPv4" if family == socket.AF_INET else "IPv6"
        raise _bad(key, value, f"must be an {kind} address") from None


def _verify(v: dict[str, Any]) -> VerifyConfig:
    _check_keys("verify", v, {"target4", "target6", "lan_dns", "timeout"})
    d = VerifyConfig()
    return VerifyConfig(
        target4=_address("verify.target4", v.get("target4", d.target4), socket.AF_INET),
        target6=_address("verify.target6", v.get("target6", d.target6), socket.AF_INET6),
        lan_dns=tuple(_address("verify.lan_dns", a, socket.AF_INET)
                      for a in _strings("verify.lan_dns", v.get("lan_dns", []))),
        timeout=_number("verify.timeout", v.get("timeout", d.timeout), minimum=0.1),
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
