"""The one place a subprocess starts. Logs every command as a copyable shell line."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any, Protocol

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


DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def which(name: str) -> str | None:
    return shutil.which(name, path=os.environ.get("PATH") or DEFAULT_PATH)


def find_tool(name: str) -> str | None:
    """which(name), then the sbin directories an unprivileged user's PATH often lacks."""
    return which(name) or shutil.which(name, path=DEFAULT_PATH)


def require(name: str) -> str:
    path = which(name)
    if path is None:
        raise MissingTool(f"`{name}` not found", INSTALL_HINTS.get(name, f"install {name}"))
    return path


def _missing(argv: Sequence[str]) -> MissingTool:
    name = argv[0].rsplit("/", 1)[-1]
    return MissingTool(f"`{name}` not found", INSTALL_HINTS.get(name, f"install {name}"))


def run(
    argv: Sequence[str],
    *,
    input: str | None = None,
    check: bool = True,
    timeout: float = 60.0,
    env: dict[str, str] | None = None,
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
            env=env,
        )
    except FileNotFoundError as exc:
        raise _missing(argv) from exc
    result = Result(tuple(argv), proc.returncode, proc.stdout, proc.stderr)
    if check and proc.returncode != 0:
        raise CommandFailed(argv, proc.returncode, proc.stderr or proc.stdout)
    return result


def spawn(
    argv: Sequence[str],
    *,
    stdout: int | IO[Any] | None = subprocess.DEVNULL,
    stderr: int | IO[Any] | None = subprocess.STDOUT,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    new_session: bool = False,
) -> subprocess.Popen[bytes]:
    """Start a long-running process (tor, the supervisor) without waiting; the caller owns it."""
    if trace is not None:
        trace(shlex.join(argv) + " &")
    try:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            cwd=cwd,
            env=env,
            start_new_session=new_session,
            close_fds=True,
        )
    except FileNotFoundError as exc:
        raise _missing(argv) from exc


class Runner(Protocol):
    """What the shell needs of the system: the seam where tests put a stateful fake."""

    def run(self, argv: Sequence[str], *, input: str | None = None, check: bool = True,
            timeout: float = 60.0, env: dict[str, str] | None = None) -> Result: ...

    def which(self, name: str) -> str | None: ...

    def require(self, name: str) -> str: ...


class HostRunner:
    """The real one: subprocesses on this machine, through run()."""

    def run(self, argv: Sequence[str], *, input: str | None = None, check: bool = True,
            timeout: float = 60.0, env: dict[str, str] | None = None) -> Result:
        return run(argv, input=input, check=check, timeout=timeout, env=env)

    def which(self, name: str) -> str | None:
        return which(name)

    def require(self, name: str) -> str:
        return require(name)


HOST = HostRunner()


def self_argv(*args: str, module: str = "netspectre", env: Mapping[str, str] | None = None,
              ) -> tuple[list[str], dict[str, str]]:
    """`python -P -m MODULE ARGS` with this very netspectre importable: (argv, env).

    The package's parent goes first on PYTHONPATH, so a checkout runs its own code in a child
    (the supervisor, a lab daemon) exactly as an installed copy does. -P: the child's working
    directory is not put on sys.path.
    """
    import netspectre

    base = dict(os.environ if env is None else env)
    root = os.path.dirname(os.path.dirname(os.path.abspath(netspectre.__file__)))
    base["PYTHONPATH"] = os.pathsep.join(p for p in (root, base.get("PYTHONPATH", "")) if p)
    return [sys.executable, "-P", "-m", module, *args], base
