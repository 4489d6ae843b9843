"""What `commands` asks of Tor: preflight, launch, wait, stop, status (managed or system)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from netspectre.config import Config, TorMode
from netspectre.errors import TorError
from netspectre.paths import Paths
from netspectre.policy import HostFacts


@dataclass(frozen=True)
class BootstrapEvent:
    progress: int  # 0..100
    tag: str
    summary: str


def port_listening(port: int, host: str = "127.0.0.1", *, udp: bool = False) -> bool:
    if udp:
        # A UDP port is "listening" when binding it fails.
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind((host, port))
        except OSError:
            return True
        finally:
            s.close()
        return False
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def preflight(config: Config, paths: Paths, facts: HostFacts) -> None:
    """Everything that can refuse before the system is touched."""
    if config.tor.mode is TorMode.SYSTEM:
        missing = [
            f"TransPort {config.tor.trans_port}"
            for ok in [port_listening(config.tor.trans_port)] if not ok
        ] + [
            f"DNSPort {config.tor.dns_port}"
            for ok in [port_listening(config.tor.dns_port, udp=True)] if not ok
        ]
        if missing:
            raise TorError(
                "tor.mode = \"system\" but the running tor does not listen on "
                + " and ".join(missing),
                "add to /etc/tor/torrc: " + "; ".join(missing)
                + f"; VirtualAddrNetworkIPv4 {config.tor.virtual_network}; "
                "AutomapHostsOnResolve 1 — then restart tor",
            )
        return
    raise TorError("tor.mode = \"managed\" is not implemented yet", "use tor.mode = \"system\"")


def launch(config: Config, paths: Paths, facts: HostFacts) -> dict[str, Any]:
    """Start what we run (managed mode); return the record `stop` needs. Fast: no waiting."""
    return {"mode": config.tor.mode.value}


def wait_bootstrap(
    config: Config, paths: Paths, on_event: Callable[[BootstrapEvent], None]
) -> None:
    return None


def stop(record: dict[str, Any] | None, paths: Paths) -> None:
    return None


def status(config: Config, paths: Paths, record: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "mode": config.tor.mode.value,
        "trans_port_listening": port_listening(config.tor.trans_port),
        "dns_port_listening": port_listening(config.tor.dns_port, udp=True),
    }
