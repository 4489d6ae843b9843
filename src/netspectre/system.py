"""The one place a subprocess starts. Logs every command as a copyable shell line."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from netspectre.errors import CommandFailed, MissingTool

# Set by the CLI under --debug: receives every command as a copyable shell line.
trace: Callable[[str], None] | None = None

INSTALL_HINTS = {
    "nft": "install nftables (apt install nftables)",
    "iptables-restore": "install iptables (apt install iptables)",
    "ip6tables-restore": "install iptables (apt install iptables)",
    "iptables-save": "install iptables (apt install iptables)",
    "tor": "install tor (apt install tor)",
    "ip": "install iproute2 (apt install iproute2)",
    "tcpdump": "install tcpdump (apt install tcpdump)",
}


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


def which(name: str) -> str | None:
    return shutil.which(name, path="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")


def require(name: str) -> str:
    path = which(name)
    if path is None:
        raise MissingTool(f"`{name}` not found", INSTALL_HINTS.get(name, f"install {name}"))
    return path


def run(
    argv: Sequence[str],
    *,
    input: str | None = None,
    check: bool = True,
    timeout: float = 60.0,
) -> Result:
    """Run argv (no shell); raise CommandFailed on a non-zero exit when check is set."""
    if trace is not None:
        trace(shlex.join(argv) + (" <<stdin" if input is not None else ""))
    try:
        proc = subprocess.run(
            list(argv),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        name = argv[0].rsplit("/", 1)[-1]
        raise MissingTool(
            f"`{name}` not found", INSTALL_HINTS.get(name, f"install {name}")
        ) from exc
    result = Result(tuple(argv), proc.returncode, proc.stdout, proc.stderr)
    if check and proc.returncode != 0:
        raise CommandFailed(argv, proc.returncode, proc.stderr or proc.stdout)
    return result
