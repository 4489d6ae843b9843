"""tor.mode = "system": check that the running tor offers what the firewall redirects to.

We never edit /etc/tor/torrc: when something is missing we refuse and print the exact lines.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence

from netspectre.config import Config
from netspectre.errors import TorError
from netspectre.tor.protocol import split_args

TORRC = "/etc/tor/torrc"


def wanted(config: Config) -> dict[str, str]:
    """option → the line that provides it."""
    tor = config.tor
    return {
        "TransPort": f"TransPort 127.0.0.1:{tor.trans_port}",
        "DNSPort": f"DNSPort 127.0.0.1:{tor.dns_port}",
        "VirtualAddrNetworkIPv4": f"VirtualAddrNetworkIPv4 {tor.virtual_network}",
        "AutomapHostsOnResolve": "AutomapHostsOnResolve 1",
    }


def _listens_on(listeners: str, port: int, hosts: tuple[str, ...] = ("127.0.0.1", "0.0.0.0")
                ) -> bool:
    """GETINFO net/listeners/* value ('"127.0.0.1:9040" "[::1]:9040"') serves host:port."""
    words, _ = split_args(listeners)
    for word in words:
        host, _, p = word.rpartition(":")
        if p == str(port) and host in hosts:
            return True
    return False


def missing(
    config: Config, listeners: Mapping[str, str], conf: Mapping[str, Sequence[str]]
) -> list[str]:
    """The torrc lines the system tor lacks, from GETINFO net/listeners/{trans,dns} + GETCONF."""
    lines = wanted(config)
    out: list[str] = []
    if not _listens_on(listeners.get("net/listeners/trans", ""), config.tor.trans_port):
        out.append(lines["TransPort"])
    if not _listens_on(listeners.get("net/listeners/dns", ""), config.tor.dns_port):
        out.append(lines["DNSPort"])
    vnet = list(conf.get("VirtualAddrNetworkIPv4", []))
    try:
        same = bool(vnet) and ipaddress.ip_network(vnet[-1]) == config.tor.virtual_network
    except ValueError:
        same = False
    if not same:
        out.append(lines["VirtualAddrNetworkIPv4"])
    if list(conf.get("AutomapHostsOnResolve", []))[-1:] != ["1"]:
        out.append(lines["AutomapHostsOnResolve"])
    gw = config.gateway
    if gw.interfaces:  # redirect lands on the gateway interface's own address: 0.0.0.0 only
        for key, port, option in (("net/listeners/trans", gw.trans_port, "TransPort"),
                                  ("net/listeners/dns", gw.dns_port, "DNSPort")):
            if not _listens_on(listeners.get(key, ""), port, ("0.0.0.0",)):
                out.append(f"{option} 0.0.0.0:{port}")
    return out


def refuse(lines: Sequence[str], *, how: str) -> TorError:
    return TorError(
        f"tor.mode = \"system\" but the running tor lacks what netspectre needs ({how})",
        f"add these lines to {TORRC}, then restart tor (systemctl restart tor):\n    "
        + "\n    ".join(lines),
    )


def from_ports(config: Config, *, trans: bool, dns: bool) -> list[str]:
    """Fallback when the control port is unreachable: only the ports can be checked."""
    lines = wanted(config)
    return ([] if trans else [lines["TransPort"]]) + ([] if dns else [lines["DNSPort"]])
