"""A plain client tor in the lab's client namespace (tests, checks, positive controls): not
netspectre's managed tor. It lives in the lab directory, so `lab down` stops and removes it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netspectre import system
from netspectre.errors import TorError
from netspectre.lab import control, processes, torrc
from netspectre.lab.info import LabInfo
from netspectre.lab.network import ns_argv


@dataclass(frozen=True)
class ClientTor:
    ns: str
    dir: Path
    socks_port: int

    @property
    def control(self) -> Path:
        return self.dir / "control"

    @property
    def socks(self) -> str:
        return f"127.0.0.1:{self.socks_port}"

    @property
    def pid(self) -> int | None:
        return processes.read_pid(self.dir / "tor.pid")


def start_client(
    info: LabInfo, *, name: str = "client-tor", socks_port: int = 9050, extra: Sequence[str] = ()
) -> ClientTor:
    d = info.dir / name
    d.mkdir(mode=0o700, exist_ok=False)
    (d / "torrc").write_text(
        torrc.client(
            data=d,
            authorities=info.authorities,
            socks_port=socks_port,
            empty=info.dir / "empty",
            extra=extra,
        )
    )
    processes.start_tor(info.spec.client_ns, d / "torrc", defaults=info.dir / "empty")
    return ClientTor(ns=info.spec.client_ns, dir=d, socks_port=socks_port)


def wait_bootstrapped(client: ClientTor, *, timeout: float = 60.0) -> float:
    """Poll the bootstrap phase until 100 %; return the seconds waited."""
    start = time.monotonic()
    last = ""
    with control.connect(client.control) as ctl:
        while time.monotonic() - start < timeout:
            last = ctl.getinfo("status/bootstrap-phase")["status/bootstrap-phase"]
            if "PROGRESS=100" in last:
                return time.monotonic() - start
            time.sleep(0.1)
    raise TorError(f"client tor did not bootstrap in {timeout:.0f} s: {last}")


def stop_client(client: ClientTor) -> None:
    pid = client.pid
    if pid is not None:
        processes.stop([pid])


def probe(ns: str, args: Sequence[str], *, timeout: float = 60.0) -> dict[str, Any]:
    """Run `python -m netspectre.lab.agent ARGS` inside a namespace; return its JSON."""
    argv = ns_argv(ns, processes.python_argv("agent", args))
    result = system.run(argv, check=False, timeout=timeout)
    try:
        value: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        value = {"error": result.stderr.strip() or f"exit {result.returncode}"}
    return value
