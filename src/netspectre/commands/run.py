"""`netspectre run -- CMD`: the program in its sandbox (run/sandbox.py), its traffic through
the relay (run/relay.py) to Tor's SocksPort; the program's exit status is the command's."""

from __future__ import annotations

import ipaddress
import json
import os
import pwd
import secrets
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from netspectre import state as state_mod
from netspectre.commands import Context
from netspectre.config import TorMode
from netspectre.errors import Error, PermissionError_, TorError
from netspectre.run import sandbox, userns

if TYPE_CHECKING:
    from netspectre.run import relay

@dataclass(frozen=True)
class SocksPort:
    host: str
    port: int
    source: str  # where we learned it: "state", "endpoints" or "config"


def locate(ctx: Context) -> SocksPort:
    """The SocksPort of the Tor netspectre started (the state's recorded endpoints; for
    everyone, their world-readable copy) or, when netspectre is not active, the config's."""
    if os.geteuid() == 0:
        current = state_mod.load_current(ctx.paths.state)
        if current is not None and current.tor is not None:
            return SocksPort("127.0.0.1", current.tor.endpoints.socks_port, "state")
    published = state_mod.load_endpoints(ctx.paths.endpoints)
    if published is not None:
        return SocksPort("127.0.0.1", published[0].socks_port, "endpoints")
    return SocksPort("127.0.0.1", ctx.config.tor.socks_port, "config")


def _check_tor(sp: SocksPort, mode: TorMode) -> None:
    try:
        with socket.create_connection((sp.host, sp.port), timeout=2):
            pass
    except OSError as exc:
        hint = ("start it: sudo netspectre start --no-firewall (Tor only) or sudo netspectre "
                "start (the whole machine)") if mode is TorMode.MANAGED else \
               "is the system tor running, with that SocksPort?"
        raise TorError(f"no Tor SocksPort at {sp.host}:{sp.port} ({sp.source}): "
                       f"{exc.strerror or exc}", hint) from None


def _target(user: str | None) -> sandbox.Target:
    env = dict(os.environ)
    env.pop("DBUS_SYSTEM_BUS_ADDRESS", None)
    if os.geteuid() != 0:
        if user is not None:
            raise PermissionError_("--user needs root", "run: sudo netspectre run --user ...")
        return sandbox.Target(os.getuid(), os.getgid(), (), env)
    if user is None and os.environ.get("SUDO_UID", "").isdigit():
        entry = pwd.getpwuid(int(os.environ["SUDO_UID"]))
    else:
        try:
            entry = pwd.getpwnam(user or "root")
        except KeyError:
            raise Error(f"unknown user {user!r}", "name an account in /etc/passwd") from None
    for key in ("SUDO_UID", "SUDO_GID", "SUDO_USER", "SUDO_COMMAND"):
        env.pop(key, None)
    env.update(HOME=entry.pw_dir, USER=entry.pw_name, LOGNAME=entry.pw_name)
    groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
    return sandbox.Target(entry.pw_uid, entry.pw_gid, groups, env)


def _credentials(shared: bool) -> tuple[bytes, bytes]:
    if shared:
        return b"netspectre-run-shared", b"shared"
    return f"netspectre-run-{os.getpid()}".encode(), secrets.token_hex(8).encode()


def _spawn(spec: sandbox.Spec) -> tuple[int, dict[str, object], list[socket.socket]]:
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:
        parent.close()
        try:
            sandbox.holder(child, spec)
        finally:  # never back into the CLI in the child
            os._exit(125)
    child.close()
    _import_relay()
    try:
        data, fds, _, _ = socket.recv_fds(parent, 4096, 8)
    finally:
        parent.close()
    message: dict[str, object] = json.loads(data or b'{"ok": false, "message": "the sandbox '
                                            b'died while being built"}')
    return pid, message, [socket.socket(fileno=fd) for fd in fds]


def _import_relay() -> None:
    """asyncio without ssl (15 ms of import; the relay speaks no TLS): while the sandbox is
    being built, in the parent, so it costs `run` nothing on two cores."""
    blocked = "ssl" not in sys.modules
    if blocked:
        sys.modules["ssl"] = None  # type: ignore[assignment]  # asyncio then goes without
    try:
        import asyncio  # noqa: F401

        from netspectre.run import relay  # noqa: F401
    finally:
        if blocked:
            del sys.modules["ssl"]


async def _serve(r: relay.Relay, socks: Sequence[socket.socket], ipv6: bool, pid: int) -> int:
    import asyncio

    loop = asyncio.get_running_loop()
    n = 2 if ipv6 else 1
    tcp, udp, dns_tcp = socks[:n], socks[n:2 * n], socks[2 * n:]
    servers = [asyncio.ensure_future(c) for c in (
        *(r.serve_tcp(s) for s in tcp), *(r.serve_udp(s) for s in udp),
        *(r.serve_dns_tcp(s) for s in dns_tcp))]
    done = asyncio.Event()
    pidfd = os.pidfd_open(pid)
    loop.add_reader(pidfd, done.set)
    for sig in sandbox.FORWARDED:
        loop.add_signal_handler(sig, os.kill, pid, sig)
    try:
        await done.wait()
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
        for task in (*servers, *r.tasks):
            task.cancel()
    _, status = os.waitpid(pid, 0)
    return sandbox.exit_status(status)


def run(ctx: Context, argv: Sequence[str], *, user: str | None = None, shared: bool = False,
        notice: Callable[[str], None] = lambda _line: None) -> int:
    """Run argv through Tor; its exit status (125 when the sandbox could not be built)."""
    if not argv:
        raise Error("nothing to run", "usage: netspectre run [--user NAME] [--shared] -- CMD")
    sp = locate(ctx)
    _check_tor(sp, ctx.config.tor.mode)
    target = _target(user)
    rootless = os.geteuid() != 0
    spec = sandbox.Spec(tuple(argv), rootless, target, os.getpid())
    for sig in (signal.SIGINT, signal.SIGQUIT):  # the terminal's go to the program too
        signal.signal(sig, signal.SIG_IGN)
    pid, message, socks = _spawn(spec)
    if not message.get("ok"):
        os.waitpid(pid, 0)
        hint = message.get("hint")
        if rootless and message.get("errno") is not None:
            hint = userns.hint()
        raise Error(f"cannot build the sandbox: {message.get('message')}",
                    str(hint) if hint else None)
    import asyncio

    from netspectre.run import relay

    username, password = _credentials(shared)
    port = int(str(message["relay_port"]))
    r = relay.Relay(relay.Tor(sp.host, sp.port, username, password),
                    relay.OnionMap(ipaddress.IPv4Network(ctx.config.tor.virtual_network)),
                    frozenset({("127.0.0.1", port), ("::1", port)}), notice)
    return asyncio.run(_serve(r, socks, bool(message.get("ipv6")), pid))
