"""The authenticated control connection to the Tor netspectre relies on, and its SocksPort."""

from __future__ import annotations

from netspectre.config import TorMode
from netspectre.errors import Error
from netspectre.paths import Paths
from netspectre.tor.control import Controller
from netspectre.tor.layout import Files
from netspectre.tor.protocol import split_args
from netspectre.tor.record import Endpoints


def system_controller(control: str, *, timeout: float = 3.0) -> Controller:
    """The system tor's control port (its ControlSocket or host:port), authenticated."""
    ctl = Controller.connect(control, timeout=timeout)
    try:
        ctl.authenticate()
    except Error:
        ctl.close()
        raise
    return ctl


def managed_controller(paths: Paths, *, timeout: float = 5.0) -> Controller:
    """Our own tor's ControlSocket, authenticated with its cookie."""
    files = Files.of(paths)
    ctl = Controller.connect(files.control, timeout=timeout)
    try:
        ctl.authenticate(files.cookie)
    except Error:
        ctl.close()
        raise
    return ctl


def controller(endpoints: Endpoints, paths: Paths, *, timeout: float = 5.0) -> Controller:
    if endpoints.mode is TorMode.SYSTEM:
        return system_controller(endpoints.control)
    return managed_controller(paths, timeout=timeout)


def socks_proxy(endpoints: Endpoints) -> tuple[str, int]:
    """Where to ask through Tor: the system tor's own SocksPort when it says, else ours."""
    if endpoints.mode is TorMode.SYSTEM:
        try:
            with system_controller(endpoints.control) as ctl:
                value = ctl.getinfo("net/listeners/socks").get("net/listeners/socks", "")
        except Error:
            value = ""
        for word in split_args(value)[0]:
            host, _, port = word.rpartition(":")
            if port.isdigit() and host in ("127.0.0.1", "0.0.0.0"):
                return "127.0.0.1", int(port)
    return "127.0.0.1", endpoints.socks_port
