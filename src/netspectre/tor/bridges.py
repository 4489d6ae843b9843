"""Bridge lines from `[tor] bridges`: parsed, validated, matched to a pluggable-transport binary.

Pure: which binaries exist is passed in (a name → path lookup), so tests need no PATH.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from netspectre.errors import ConfigError

# transport → candidate binaries, best first. lyrebird is obfs4proxy's successor (same flags).
PLUGINS: Mapping[str, tuple[str, ...]] = {
    "obfs4": ("lyrebird", "obfs4proxy"),
    "meek_lite": ("lyrebird", "obfs4proxy"),
    "snowflake": ("snowflake-client",),
    "webtunnel": ("webtunnel-client",),
}

INSTALL: Mapping[str, str] = {
    "obfs4": "apt install obfs4proxy (Debian 12 / Ubuntu), or apt install lyrebird where packaged",
    "meek_lite": "apt install obfs4proxy (Debian 12 / Ubuntu), or apt install lyrebird",
    "snowflake": "apt install snowflake-client",
    "webtunnel": (
        "install the webtunnel-client binary of Tor's webtunnel project (Debian 12 has no "
        "package for it), or name a plugin that speaks webtunnel in tor.torrc_extra: "
        "\"ClientTransportPlugin webtunnel exec /path/to/lyrebird\""
    ),
}

# Arguments a bridge of this transport cannot work without.
REQUIRED_ARGS: Mapping[str, tuple[str, ...]] = {
    "obfs4": ("cert", "iat-mode"),
    "webtunnel": ("url",),
}

_TRANSPORT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_FINGERPRINT = re.compile(r"^[0-9A-Fa-f]{40}$")
_HEXISH = re.compile(r"^[0-9A-Fa-f$]{16,}$")


@dataclass(frozen=True)
class Bridge:
    transport: str | None  # None: a plain (vanilla) bridge
    address: str
    fingerprint: str | None
    args: tuple[tuple[str, str], ...]

    def line(self) -> str:
        parts = [p for p in (self.transport, self.address, self.fingerprint) if p]
        parts += [f"{k}={v}" for k, v in self.args]
        return " ".join(parts)


def _bad(index: int, line: str, why: str, hint: str | None = None) -> ConfigError:
    shown = line if len(line) <= 60 else line[:57] + "..."
    return ConfigError(
        f"invalid tor.bridges[{index}] = {shown!r}: {why}",
        hint or "bridge lines look like \"obfs4 203.0.113.5:443 <40-hex fingerprint> "
        "cert=... iat-mode=0\" (as given by bridges.torproject.org)",
    )


def _address(token: str) -> bool:
    host, sep, port = token.rpartition(":")
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
        return False
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
        return True
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True


def parse(index: int, line: str) -> Bridge:
    """One `[tor] bridges` entry → Bridge; ConfigError naming the entry when malformed."""
    if any(c in line for c in "\r\n\0"):
        raise _bad(index, line, "one bridge per entry (no newlines)")
    tokens = line.split()
    if tokens and tokens[0].lower() == "bridge":
        tokens = tokens[1:]  # "Bridge obfs4 …" as copied from a torrc
    if not tokens:
        raise _bad(index, line, "empty bridge line")
    transport: str | None = None
    if not _address(tokens[0]):
        if not _TRANSPORT.match(tokens[0]):
            raise _bad(index, line, f"{tokens[0]!r} is neither a transport name nor IP:port")
        transport = tokens[0]
        tokens = tokens[1:]
        if not tokens or not _address(tokens[0]):
            raise _bad(index, line, "the transport name must be followed by IP:port")
    address, rest = tokens[0], tokens[1:]
    fingerprint: str | None = None
    if rest and "=" not in rest[0]:
        candidate = rest[0].removeprefix("$")
        if not _FINGERPRINT.match(candidate):
            why = (
                "the fingerprint must be 40 hex digits"
                if _HEXISH.match(rest[0])
                else f"unexpected {rest[0]!r} (expected a fingerprint or key=value)"
            )
            raise _bad(index, line, why)
        fingerprint = candidate.upper()
        rest = rest[1:]
    args: list[tuple[str, str]] = []
    for token in rest:
        key, sep, value = token.partition("=")
        if not sep or not key:
            raise _bad(index, line, f"unexpected {token!r} (expected key=value)")
        args.append((key, value))
    if transport is not None:
        missing = [k for k in REQUIRED_ARGS.get(transport, ()) if k not in dict(args)]
        if missing:
            raise _bad(index, line, f"a {transport} bridge needs " + ", ".join(
                f"{k}=" for k in missing))
    return Bridge(transport, address, fingerprint, tuple(args))


def parse_all(lines: Iterable[str]) -> tuple[Bridge, ...]:
    return tuple(parse(i, line) for i, line in enumerate(lines))


def plugins(
    bridges: Iterable[Bridge],
    which: Callable[[str], str | None],
    *,
    provided: Iterable[str] = (),
) -> dict[str, tuple[str, ...]]:
    """binary path → transports it serves, for the transports these bridges use.

    `provided`: transports a `ClientTransportPlugin` line in torrc_extra already covers.
    A transport with no installed binary is a ConfigError that names the package.
    """
    covered = {t.lower() for t in provided}
    chosen: dict[str, set[str]] = {}
    for bridge in bridges:
        t = bridge.transport
        if t is None or t.lower() in covered:
            continue
        candidates = PLUGINS.get(t)
        if candidates is None:
            raise ConfigError(
                f"tor.bridges uses the transport {t!r}, which netspectre does not know",
                "use obfs4, snowflake, webtunnel or meek_lite bridges, or add "
                f"\"ClientTransportPlugin {t} exec /path/to/plugin\" to tor.torrc_extra",
            )
        found = next((p for p in (which(c) for c in candidates) if p), None)
        if found is None:
            raise ConfigError(
                f"tor.bridges uses {t} but no {t} plugin is installed (looked for "
                + " and ".join(candidates) + " on PATH)",
                INSTALL[t],
            )
        chosen.setdefault(found, set()).add(t)
    return {path: tuple(sorted(ts)) for path, ts in sorted(chosen.items())}
