"""One TOML value → one typed Python value, or a ConfigError naming the key and the value.

Pure: the readers `config` builds its sections from; they check types and ranges, nothing else.
"""

from __future__ import annotations

import ipaddress
import socket
from enum import Enum
from typing import Any

from netspectre.errors import ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def bad(key: str, value: object, why: str, hint: str | None = None) -> ConfigError:
    return ConfigError(f"invalid {key} = {value!r}: {why}", hint)


def port(key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad(key, value, "must be an integer port")
    if not 1 <= value <= 65535:
        raise bad(key, value, "port must be between 1 and 65535")
    return value


def string(key: str, value: object) -> str:
    if not isinstance(value, str):
        raise bad(key, value, f"must be a string, not {type(value).__name__}")
    return value


def boolean(key: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise bad(key, value, "must be true or false")
    return value


def number(key: str, value: object, *, minimum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad(key, value, "must be a number")
    if value < minimum:
        raise bad(key, value, f"must be at least {minimum}")
    return float(value)


def member(key: str, value: object, enum: type[Enum]) -> Any:
    choices = ", ".join(repr(m.value) for m in enum)
    if not isinstance(value, str):
        raise bad(key, value, f"must be one of {choices}")
    try:
        return enum(value)
    except ValueError:
        raise bad(key, value, f"must be one of {choices}") from None


def strings(key: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad(key, value, "must be a list of strings")
    return tuple(value)


def network(key: str, value: object) -> Network:
    text = string(key, value)
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise bad(key, value, f"not a CIDR network ({exc})") from None


# [tor] virtual_network6: a ULA /48 picked at random (RFC 4193), so in no default LAN range.
DEFAULT_VNET6 = "fd6e:7370:6563::/48"


def network6(key: str, value: object) -> ipaddress.IPv6Network:
    """An IPv6 network tor accepts as VirtualAddrNetworkIPv6 (a /104 or larger)."""
    net = network(key, value)
    if not isinstance(net, ipaddress.IPv6Network):
        raise bad(key, value, "must be an IPv6 network")
    if net.prefixlen > 104:
        raise bad(key, value, "too small (tor needs /104 or larger)")
    return net


# What Linux refuses in an interface name (dev_valid_name), plus what nft would read as a
# wildcard or a quote: an interface set must name interfaces exactly.
_NOT_IFNAME = set(' \t\n\r\f\v/:"\\*?[]\'')


def ifname(key: str, value: object) -> str:
    text = string(key, value)
    if not 0 < len(text) < 16 or text in (".", "..") or _NOT_IFNAME & set(text):
        raise bad(key, value, "not an interface name (1-15 characters, no space, '/', ':', "
                  "quote or wildcard)")
    if text == "lo":
        raise bad(key, value, "loopback cannot be a gateway interface")
    return text


def cidr(key: str, value: object) -> str:
    """Validate a CIDR quickly (inet_pton); fall back to ipaddress for the error message."""
    text = string(key, value)
    addr, slash, length = text.partition("/")
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    bits = 128 if family == socket.AF_INET6 else 32
    try:
        packed = socket.inet_pton(family, addr)
        prefix = int(length) if slash and length.isdigit() else -1
        if not 0 <= prefix <= bits or int.from_bytes(packed, "big") & ((1 << (bits - prefix)) - 1):
            raise ValueError
    except (OSError, ValueError):
        return str(network(key, value))  # raises with ipaddress's explanation
    return f"{socket.inet_ntop(family, packed)}/{prefix}"


def address(key: str, value: object, family: int) -> str:
    text = string(key, value)
    try:
        return socket.inet_ntop(family, socket.inet_pton(family, text))
    except OSError:
        kind = "IPv4" if family == socket.AF_INET else "IPv6"
        raise bad(key, value, f"must be an {kind} address") from None


def user(key: str, value: object) -> str:
    text = string(key, value)
    if not text or not all(c.isalnum() or c in "_-." for c in text) or text[0] == "-":
        raise bad(key, value, "not a valid account name")
    return text


def names(key: str, value: object) -> tuple[str, ...]:
    """A list of account (user or group) names, deduplicated in order."""
    return tuple(dict.fromkeys(user(key, v) for v in strings(key, value)))


def torrc_line(key: str, line: str) -> str:
    if "\n" in line or "\r" in line or "\0" in line:
        raise bad(key, line, "one torrc line per entry (no newlines)")
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        raise bad(key, line, "empty lines and comments are not options")
    option = stripped.split()[0]
    if not option.replace("_", "").isalnum():
        raise bad(key, line, f"{option!r} is not a torrc option name")
    return stripped


# The raw guard's packet-mark bit: one bit nobody else we know of uses. Docker sets none on
# the host's own traffic; wg-quick 0xca6c, Tailscale 0x40000/0x80000 (mask 0xff0000),
# kube-proxy 0x4000/0x8000, Calico 0xffff0000 (its mask), Cilium 0xf00 (its mask). Bit 13 is
# in none of them (0x00200000 would be inside Tailscale's and Calico's masks). The bit is set
# in postrouting, after every routing decision, so `ip rule fwmark` never sees it.
DEFAULT_GUARD_MARK = 0x2000
TAKEN_MARK_BITS = {
    0xca6c: "wg-quick (fwmark 51820)", 0xff0000: "Tailscale", 0x4000: "kube-proxy",
    0x8000: "kube-proxy", 0xffff0000: "Calico", 0xf00: "Cilium",
}


def mark_bit(key: str, value: object) -> int:
    """Exactly one bit of the 32-bit packet mark, none of the ones TAKEN_MARK_BITS names."""
    hint = f"use one free bit, e.g. {DEFAULT_GUARD_MARK:#010x} (the default)"
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad(key, value, "must be an integer with one bit set", hint)
    if not 0 < value < 1 << 32 or value & (value - 1):
        raise bad(key, value, "must have exactly one of the 32 mark bits set", hint)
    for taken, who in TAKEN_MARK_BITS.items():
        if value & taken:
            raise bad(key, value, f"{value:#x} clashes with {who}'s marks ({taken:#x})", hint)
    return value


def url(key: str, value: object) -> str:
    text = string(key, value)
    if not (text.startswith("http://") or text.startswith("https://")) or len(text) < 10:
        raise bad(key, value, "must be an http:// or https:// URL")
    return text


def known_keys(section: str, table: dict[str, Any], known: set[str]) -> None:
    for key in table:
        if key not in known:
            where = f"{section}.{key}" if section else key
            raise ConfigError(
                f"unknown key {where!r}",
                f"known keys{' in [' + section + ']' if section else ''}: "
                + ", ".join(sorted(known)),
            )


def table(section: str, data: dict[str, Any]) -> dict[str, Any]:
    value = data.get(section, {})
    if not isinstance(value, dict):
        raise bad(section, value, "must be a table ([" + section + "])")
    return value
