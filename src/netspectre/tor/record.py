"""Where a Tor serves netspectre, and the state's record of the Tor a start relies on. Pure.

Derived once from the config at `start`/`restart` and recorded: later commands (status,
verify, newnym, myip, stop) ask the recording, not the config on disk, which may have changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from netspectre.config import Config, TorMode


@dataclass(frozen=True)
class Endpoints:
    """The ports the firewall redirects to, the SocksPort, and the system tor's control port."""

    mode: TorMode
    trans_port: int
    dns_port: int
    socks_port: int
    control: str  # system mode: its ControlSocket or host:port; managed: ours under paths

    @classmethod
    def of(cls, config: Config) -> Endpoints:
        t = config.tor
        return cls(mode=t.mode, trans_port=t.trans_port, dns_port=t.dns_port,
                   socks_port=t.socks_port, control=t.control)


@dataclass(frozen=True)
class TorRecord:
    """What `stop` ends and `status` looks at; managed mode adds the supervisor we started."""

    endpoints: Endpoints
    torrc_sha256: str = ""  # the torrc the managed tor runs with (restart compares)
    supervisor_pid: int | None = None
    tor_user: str | None = None
    torrc: str | None = None
    data_directory: str | None = None
    started: float | None = None

    @property
    def mode(self) -> TorMode:
        return self.endpoints.mode

    def with_(self, **changes: Any) -> TorRecord:
        return replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        e = self.endpoints
        data: dict[str, Any] = {
            "mode": e.mode.value, "trans_port": e.trans_port, "dns_port": e.dns_port,
            "socks_port": e.socks_port, "control": e.control,
        }
        for key in ("torrc_sha256", "supervisor_pid", "tor_user", "torrc", "data_directory",
                    "started"):
            value = getattr(self, key)
            if value not in (None, ""):
                data[key] = value
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, fallback: Endpoints) -> TorRecord:
        """Records written before the endpoints were recorded take them from fallback."""
        endpoints = Endpoints(
            mode=TorMode(data.get("mode", fallback.mode.value)),
            trans_port=int(data.get("trans_port", fallback.trans_port)),
            dns_port=int(data.get("dns_port", fallback.dns_port)),
            socks_port=int(data.get("socks_port", fallback.socks_port)),
            control=str(data.get("control", fallback.control)),
        )
        pid = data.get("supervisor_pid")
        started = data.get("started")
        return cls(
            endpoints=endpoints,
            torrc_sha256=str(data.get("torrc_sha256", "")),
            supervisor_pid=pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
            tor_user=_str(data.get("tor_user")),
            torrc=_str(data.get("torrc")),
            data_directory=_str(data.get("data_directory")),
            started=float(started) if isinstance(started, int | float) else None,
        )


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None
