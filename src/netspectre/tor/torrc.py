"""Config + paths + facts → the managed tor's torrc text. Pure (plugin lookup is passed in)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from netspectre.config import Config, Ipv6Mode
from netspectre.errors import ConfigError
from netspectre.paths import Paths
from netspectre.policy import HostFacts
from netspectre.tor import bridges
from netspectre.tor.layout import Files

HEADER = (
    "# Written by netspectre for the tor it runs; rewritten by every `netspectre start`.\n"
    "# Change [tor] in /etc/netspectre/netspectre.toml (torrc_extra for other options).\n"
)

# Options netspectre sets itself: the firewall, `stop` and the control client depend on their
# values, so torrc_extra may not change them. Tor matches option names case-insensitively.
MANAGED: Mapping[str, str] = {
    "user": "set tor.user",
    "runasdaemon": "the supervisor needs tor in the foreground",
    "datadirectory": "netspectre keeps it under /var/lib/netspectre/tor",
    "pidfile": "netspectre writes it",
    "controlsocket": "netspectre's control client uses its own socket",
    "cookieauthentication": "netspectre's control client authenticates with the cookie",
    "cookieauthfile": "netspectre's control client reads the cookie it configured",
    "socksport": "set tor.socks_port",
    "transport": "set tor.trans_port",
    "dnsport": "set tor.dns_port",
    "virtualaddrnetworkipv4": "set tor.virtual_network",
    "virtualaddrnetworkipv6": "set tor.virtual_network6",
    "automaphostsonresolve": "the firewall's .onion routing needs it on",
    "automaphostonresolve": "the firewall's .onion routing needs it on",
    "transproxytype": "the firewall redirects with NAT, Tor's default",
    "usebridges": "list bridges in tor.bridges",
    "bridge": "list bridges in tor.bridges",
}

# Not set: __OwningControllerProcess. It would make tor exit when the supervisor dies, so a
# crashed supervisor would take Tor down with it; a tor that outlives its supervisor keeps
# traffic flowing, and `stop` still finds and ends it through the pid files.


def option(line: str) -> str:
    return line.split(None, 1)[0].lower()


def check_extra(lines: tuple[str, ...]) -> None:
    for line in lines:
        name = option(line)
        if name in MANAGED:
            raise ConfigError(
                f"tor.torrc_extra may not set {line.split()[0]}: netspectre manages it",
                MANAGED[name],
            )


def _path(value: object) -> str:
    text = str(value)
    if any(c.isspace() or c in "\"'\\#" for c in text):
        raise ConfigError(
            f"path {text!r} cannot be written into a torrc (whitespace, quote or #)",
            "set NETSPECTRE_RUN_DIR / NETSPECTRE_LIB_DIR to plain paths",
        )
    return text


def ipv6_lines(config: Config, facts: HostFacts) -> list[str]:
    """The listeners for ipv6 = "torify" and [gateway] ([] for configs without them).

    tor cannot bind [::1] without ::1 on lo, nor [::] without an IPv6 stack (it then refuses
    to start): those listeners are left out, as Whonix does. IPv6Traffic on the DNSPorts
    (AAAA answers); TransPort takes no such flag (tor 0.4.9 warns "Unrecognized TransPort
    option"): it serves the family of the redirected connection. tor's v6 listeners are
    IPV6_V6ONLY, so 0.0.0.0 and [::] on one port do not clash (measured with tor 0.4.9)."""
    tor, gw = config.tor, config.gateway
    torify = config.firewall.ipv6 is Ipv6Mode.TORIFY
    if not torify and not gw.interfaces:
        return []
    lines = [f"VirtualAddrNetworkIPv6 [{tor.virtual_network6.network_address}]/"
             f"{tor.virtual_network6.prefixlen}"]
    if torify and facts.ipv6_loopback:
        lines += [f"TransPort [::1]:{tor.trans_port}", f"DNSPort [::1]:{tor.dns_port} IPv6Traffic"]
    elif torify:
        lines.append("# no ::1 on this host: no IPv6 listeners (IPv6 stays refused)")
    if gw.interfaces:
        lines += ["", "# [gateway]: reachable only from its interfaces (the input chain)",
                  f"TransPort 0.0.0.0:{gw.trans_port}", f"DNSPort 0.0.0.0:{gw.dns_port}"]
        if facts.ipv6_stack:
            lines += [f"TransPort [::]:{gw.trans_port}", f"DNSPort [::]:{gw.dns_port} IPv6Traffic"]
    return lines


def render(
    config: Config,
    paths: Paths,
    facts: HostFacts,
    *,
    which: Callable[[str], str | None] = lambda name: None,
) -> str:
    """The whole torrc. `which` finds pluggable-transport binaries (system.which in real use)."""
    tor = config.tor
    files = Files.of(paths)
    check_extra(tor.torrc_extra)
    lines = [
        f"User {facts.tor_user}",
        "RunAsDaemon 0",
        f"DataDirectory {_path(files.data)}",
        f"PidFile {_path(files.daemon_pid)}",
        f"Log notice file {_path(files.notice_log)}",
        f"ControlSocket {_path(files.control)}",
        "CookieAuthentication 1",
        f"CookieAuthFile {_path(files.cookie)}",
        "",
        "# What the firewall redirects to; .onion names resolve into the virtual network.",
        f"SocksPort 127.0.0.1:{tor.socks_port} ExtendedErrors",
        f"TransPort 127.0.0.1:{tor.trans_port}",
        f"DNSPort 127.0.0.1:{tor.dns_port}",
        f"VirtualAddrNetworkIPv4 {tor.virtual_network}",
        "AutomapHostsOnResolve 1",
        "AutomapHostsSuffixes .onion,.exit",
        *ipv6_lines(config, facts),
    ]
    parsed = bridges.parse_all(tor.bridges)
    if parsed:
        provided = [
            t
            for line in tor.torrc_extra
            if option(line) == "clienttransportplugin" and len(line.split()) > 1
            for t in line.split()[1].split(",")
        ]
        lines += ["", "# [tor] bridges", "UseBridges 1"]
        for binary, transports in bridges.plugins(parsed, which, provided=provided).items():
            lines.append(f"ClientTransportPlugin {','.join(transports)} exec {_path(binary)}")
        lines += [f"Bridge {b.line()}" for b in parsed]
    if tor.torrc_extra:
        # Last, so they win: tor keeps the last value of a single-valued option (it warns
        # "used more than once") and appends to list options (DirAuthority, Log, …).
        lines += ["", "# [tor] torrc_extra", *tor.torrc_extra]
    return HEADER + "\n" + "\n".join(lines) + "\n"
