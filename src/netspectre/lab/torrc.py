"""torrc text for the lab's tors: authorities, relays, exits, the onion service, and the lines a
client of the private network needs. Pure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from netspectre.lab.spec import ONION_PORT, WEB_PORT, Relay, Role

# Voting every 20 s (10 s until the first consensus) instead of Tor's testing defaults, which
# make the network usable only after ~143 s.
VOTING_INTERVAL = 20
INITIAL_VOTING_INTERVAL = 10
_VOTING = (
    f"TestingV3AuthInitialVotingInterval {INITIAL_VOTING_INTERVAL}",
    "TestingV3AuthInitialVoteDelay 2",
    "TestingV3AuthInitialDistDelay 2",
    f"V3AuthVotingInterval {VOTING_INTERVAL}",
    "V3AuthVoteDelay 4",
    "V3AuthDistDelay 4",
    "V3AuthNIntervalsValid 2",
)


@dataclass(frozen=True)
class Authority:
    """What the other tors need to trust an authority."""

    relay: Relay
    v3ident: str  # fingerprint of the tor-gencert authority identity key
    fingerprint: str  # the relay's RSA identity fingerprint

    def dir_authority_line(self) -> str:
        r = self.relay
        return (
            f"DirAuthority {r.nick} orport={r.or_port} no-v2 v3ident={self.v3ident} "
            f"{r.v4}:{r.dir_port} {self.fingerprint}"
        )


def voting_start_offset(now: float, *, lead: float) -> int:
    """TestingV3AuthVotingStartOffset that puts the first consensus `lead` seconds after `now`.

    Tor starts voting intervals at midnight + offset; the first consensus is valid from the
    first interval boundary after the authorities start, and its vote happens
    VoteDelay+DistDelay (4 s) before. Leaving the relays `lead` seconds to upload their
    descriptors makes the first consensus list all of them instead of waiting for the next one.
    """
    return int(now + lead) % INITIAL_VOTING_INTERVAL


def client_lines(authorities: Sequence[Authority]) -> list[str]:
    """The torrc lines any tor needs to use the private network (also the client's)."""
    return ["TestingTorNetwork 1", *(a.dir_authority_line() for a in authorities)]


def _common(data: Path, authorities: Sequence[Authority]) -> list[str]:
    return [
        *client_lines(authorities),
        f"DataDirectory {data}",
        f"PidFile {data / 'tor.pid'}",
        "RunAsDaemon 1",
        f"Log notice file {data / 'notice.log'}",
        f"ControlSocket {data / 'control'}",
        "CookieAuthentication 0",
        "SocksPort 0",
    ]


def relay(
    r: Relay, *, data: Path, authorities: Sequence[Authority], resolv_conf: Path, offset: int
) -> str:
    lines = _common(data, authorities) + [
        f"Nickname {r.nick}",
        f"Address {r.v4}",
        f"ORPort {r.v4}:{r.or_port}",
        # Relays share one namespace: without this, connections leave from any of its addresses.
        f"OutboundBindAddress {r.v4}",
        f"OutboundBindAddress [{r.v6}]",
        "AssumeReachable 1",
        f"ContactInfo {r.nick}@lab.test",
    ]
    if r.role is Role.AUTHORITY:
        lines += [
            "AuthoritativeDirectory 1",
            "V3AuthoritativeDirectory 1",
            f"DirPort {r.v4}:{r.dir_port}",
            *_VOTING,
            f"TestingV3AuthVotingStartOffset {offset}",
            "ExitRelay 0",
            "ExitPolicy reject *:*",
        ]
    else:
        # HSDir flags then go to the authorities only, which do cache directories.
        lines += ["DirCache 0"]
    if r.role is Role.EXIT:
        lines += [
            "ExitRelay 1",
            "IPv6Exit 1",
            "ExitPolicy accept *:80, accept *:443, reject *:*",
            "RefuseUnknownExits 0",
            f"ServerDNSResolvConfFile {resolv_conf}",
            "ServerDNSDetectHijacking 0",
            "ServerDNSAllowBrokenConfig 1",
        ]
    elif r.role is Role.MIDDLE:
        lines += ["ExitRelay 0", "ExitPolicy reject *:*"]
    return "\n".join(lines) + "\n"


def onion_service(
    *, data: Path, authorities: Sequence[Authority], web: str, bind: str | None = None
) -> str:
    lines = _common(data, authorities) + [
        f"HiddenServiceDir {data / 'hs'}",
        f"HiddenServicePort {ONION_PORT} {web}:{WEB_PORT}",
    ]
    if bind:
        lines.append(f"OutboundBindAddress {bind}")
    return "\n".join(lines) + "\n"


def client(
    *, data: Path, authorities: Sequence[Authority], socks_port: int, extra: Sequence[str] = ()
) -> str:
    """A plain client of the private network (tests and checks; not netspectre's managed tor)."""
    lines = _common(data, authorities)
    lines = [ln for ln in lines if ln != "SocksPort 0"]
    lines += [f"SocksPort 127.0.0.1:{socks_port}", *extra]
    return "\n".join(lines) + "\n"
