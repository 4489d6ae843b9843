"""torrc text for the lab's tors: authorities, relays, exits, the onion service, and the lines a
client of the private network needs. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from netspectre.lab.spec import OBFS4_PORT, ONION_PORT, WEB_PORT, Relay, Role

# Voting every 20 s (10 s until the first consensus) instead of Tor's testing defaults, which
# make the network usable only after ~143 s.
VOTING_INTERVAL = 20
INITIAL_VOTING_INTERVAL = 10
LAB_BANDWIDTH = 1000  # KB/s, what the "bandwidth authority" measured for every relay
INITIAL_VOTE_AND_DIST = 4  # the first vote happens this long before the first consensus
_VOTING = (
    f"TestingV3AuthInitialVotingInterval {INITIAL_VOTING_INTERVAL}",
    f"TestingV3AuthInitialVoteDelay {INITIAL_VOTE_AND_DIST // 2}",
    f"TestingV3AuthInitialDistDelay {INITIAL_VOTE_AND_DIST // 2}",
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


def client_lines(authorities: Sequence[Authority]) -> list[str]:
    """The torrc lines any tor needs to use the private network (also the client's)."""
    return ["TestingTorNetwork 1", *(a.dir_authority_line() for a in authorities)]


def _common(data: Path, authorities: Sequence[Authority], empty: Path) -> list[str]:
    return [
        *client_lines(authorities),
        f"DataDirectory {data}",
        f"PidFile {data / 'tor.pid'}",
        "RunAsDaemon 1",
        f"Log notice file {data / 'notice.log'}",
        "LogTimeGranularity 1",
        f"ControlSocket {data / 'control'}",
        "CookieAuthentication 0",
        "SocksPort 0",
        # Parsing the GeoIP databases costs each tor ~0.5 s of CPU at start; the lab has no
        # countries, and no use for statistics.
        f"GeoIPFile {empty}",
        f"GeoIPv6File {empty}",
        "DirReqStatistics 0",
        "ExtraInfoStatistics 0",
    ]


def bandwidths(fingerprints: Iterable[str], *, now: float) -> str:
    """A V3BandwidthsFile giving every relay the same measured bandwidth. Without it the first
    consensus weighs all relays 0 except one; every client then picks that one as rendezvous
    point, and when it is also the client's guard, no onion circuit can ever be built."""
    lines = [f"{int(now)}"] + [f"node_id=${fp} bw={LAB_BANDWIDTH}" for fp in fingerprints]
    return "\n".join(lines) + "\n"


def relay(
    r: Relay,
    *,
    data: Path,
    authorities: Sequence[Authority],
    resolv_conf: Path,
    bandwidths: Path,
    offset: int,
    empty: Path,
    obfs4proxy: str = "/usr/bin/obfs4proxy",
) -> str:
    """A relay's torrc; obfs4proxy is the bridge's transport plugin (the bridge only)."""
    dir_caches = ",".join(f"${a.fingerprint}" for a in authorities)
    lines = _common(data, authorities, empty) + [
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
            f"V3BandwidthsFile {bandwidths}",
            # Flags that otherwise depend on uptime ranks (Stable is "above the median"), so a
            # random authority would lack them. Only directory caches may be HSDirs.
            f"TestingDirAuthVoteGuard {dir_caches}",
            f"TestingDirAuthVoteHSDir {dir_caches}",
            "ExitRelay 0",
            "ExitPolicy reject *:*",
        ]
    elif r.role is Role.BRIDGE:
        # Unpublished: a client learns it from its bridge line only, fetches its descriptor and
        # the consensus from it (a bridge caches directories), and never talks to another relay.
        lines += [
            "BridgeRelay 1",
            "PublishServerDescriptor 0",
            f"ServerTransportPlugin obfs4 exec {obfs4proxy}",
            f"ServerTransportListenAddr obfs4 {r.v4}:{OBFS4_PORT}",
            "ExtORPort auto",
            "ExitRelay 0",
            "ExitPolicy reject *:*",
        ]
    else:
        # HSDir flags then go to the authorities only, which do cache directories.
        lines += ["DirCache 0"]
    if r.role is Role.EXIT:
        lines += [
            "ExitRelay 1",
            # With IPv6Exit, "*" in the policy is both *4 and *6: the exits connect to the
            # lab's internet6 too (as their OutboundBindAddress [v6]).
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
    *, data: Path, authorities: Sequence[Authority], web: str, empty: Path
) -> str:
    """Starts without network: `up` enables it once the consensus lists every relay (an onion
    service started with the relays may never publish), after its upload watcher subscribed."""
    lines = _common(data, authorities, empty) + [
        f"HiddenServiceDir {data / 'hs'}",
        f"HiddenServicePort {ONION_PORT} {web}:{WEB_PORT}",
        "DisableNetwork 1",
    ]
    return "\n".join(lines) + "\n"


def client(
    *,
    data: Path,
    authorities: Sequence[Authority],
    socks_port: int,
    empty: Path,
    extra: Sequence[str] = (),
) -> str:
    """A plain client of the private network (tests and checks; not netspectre's managed tor)."""
    lines = _common(data, authorities, empty)
    lines = [ln for ln in lines if ln != "SocksPort 0"]
    lines += [f"SocksPort 127.0.0.1:{socks_port}", *extra]
    return "\n".join(lines) + "\n"


def obfs4_bridge_line(r: Relay, fingerprint: str, bridgeline_txt: str) -> str:
    """The client's `Bridge` line (without "Bridge") from obfs4proxy's
    pt_state/obfs4_bridgeline.txt, whose address, port and fingerprint are placeholders."""
    for line in bridgeline_txt.splitlines():
        words = line.split()
        if words[:2] == ["Bridge", "obfs4"]:
            certs = [w for w in words if w.startswith("cert=") and len(w) > 5]
            iat = [w for w in words if w in ("iat-mode=0", "iat-mode=1", "iat-mode=2")]
            args = certs[:1] + iat[:1]
            if len(args) == 2:
                return f"obfs4 {r.v4}:{OBFS4_PORT} {fingerprint} " + " ".join(args)
    raise ValueError("no 'Bridge obfs4 ... cert=... iat-mode=...' line")
