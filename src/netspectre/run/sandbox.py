"""The child side of `netspectre run`: namespaces, the network inside, the files the program
sees, then the program itself with no capability left.

Processes: the relay (the parent, outside) forks the *holder*, which enters new user (rootless
only), network, mount and PID namespaces, builds the network, hands the listening sockets to
the relay and forks the namespace's *init* (PID 1), which forks and execs the program. Each has
PR_SET_PDEATHSIG = SIGKILL, so a `kill -9` of the relay takes the holder, init and, with init,
every process of the PID namespace; the namespaces go with their last process.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import sys
from dataclasses import dataclass
from typing import NoReturn

from netspectre import system
from netspectre.errors import Error
from netspectre.run import linux, netsetup, rtnl

FORWARDED = (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGCONT)
RESET = (signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE,
         signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGXFSZ, signal.SIGCHLD)
SCRATCH = "/tmp"  # shadowed by a tmpfs while the sandbox's files are made, then uncovered


@dataclass(frozen=True)
class Target:
    """Who the program runs as."""

    uid: int
    gid: int
    groups: tuple[int, ...]
    env: dict[str, str]


@dataclass(frozen=True)
class Spec:
    argv: tuple[str, ...]
    rootless: bool  # a user namespace maps the invoking user (no root needed)
    target: Target
    relay_pid: int  # the parent: the holder dies if it is gone


def _tool(name: str) -> str:
    found = system.find_tool(name)
    if found is None:
        raise Error(f"`{name}` not found", system.INSTALL_HINTS.get(name, f"install {name}"))
    return found


def _listen(family: int, kind: int, port: int) -> socket.socket:
    sock = socket.socket(family, kind)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1" if family == socket.AF_INET else "::1", port))
    if kind == socket.SOCK_STREAM:
        sock.listen(1024)
    return sock


def _has_ipv6() -> bool:
    """IPv6 in this (new) network namespace: /proc/sys/net shows the reader's namespace."""
    try:
        with open("/proc/sys/net/ipv6/conf/lo/disable_ipv6") as f:
            return f.read().strip() == "0"
    except OSError:
        return False


def build_network() -> tuple[netsetup.Ports, list[socket.socket]]:
    """Inside the new network namespace: lo, routes, rules and the listening sockets (the TCP
    relay's, then DNS over UDP and TCP), IPv4 first, IPv6 where ::1 exists."""
    ipv6 = _has_ipv6()
    rtnl.apply(ipv6, netsetup.ROUTE_TABLE, netsetup.DNS_PORT)  # netsetup.ip_batches, no process
    relay4 = _listen(socket.AF_INET, socket.SOCK_STREAM, 0)
    port = relay4.getsockname()[1]
    socks = [relay4]
    families = (socket.AF_INET, socket.AF_INET6) if ipv6 else (socket.AF_INET,)
    if ipv6:
        socks.append(_listen(socket.AF_INET6, socket.SOCK_STREAM, port))
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        socks += [_listen(f, kind, netsetup.DNS_PORT) for f in families]
    ports = netsetup.Ports(relay=port, ipv6=ipv6)
    system.run([_tool("nft"), "-f", "-"], input=netsetup.nft_script(ports))
    return ports, socks


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def build_files() -> None:
    """Inside the new mount namespace: an empty read-only tmpfs over each resolving daemon's
    socket directory, our resolv.conf and nsswitch.conf bound over the host's."""
    linux.mount("none", "/", None, linux.MS_REC | linux.MS_PRIVATE)
    resolv = os.path.realpath("/etc/resolv.conf")
    nss = _read("/etc/nsswitch.conf")
    linux.mount("tmpfs", SCRATCH, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, "mode=0755,size=64k")
    try:
        files = {"resolv.conf": netsetup.RESOLV_CONF, "nsswitch.conf": netsetup.nsswitch(nss)}
        for name, text in files.items():
            with open(f"{SCRATCH}/{name}", "w") as f:
                f.write(text)
        for hidden in netsetup.HIDDEN:
            real = os.path.realpath(hidden)
            if not os.path.isdir(real):
                continue
            linux.mount("tmpfs", real, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV
                        | linux.MS_NOEXEC, "mode=0755,size=16k")
            if resolv.startswith(real + "/"):  # resolv.conf is a link into a hidden directory
                os.makedirs(os.path.dirname(resolv), exist_ok=True)
                open(resolv, "w").close()
            linux.mount("none", real, None, linux.MS_REMOUNT | linux.MS_BIND | linux.MS_RDONLY
                        | linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC)
        if os.path.isfile(resolv):
            linux.mount(f"{SCRATCH}/resolv.conf", resolv, None, linux.MS_BIND)
        if nss:
            linux.mount(f"{SCRATCH}/nsswitch.conf", "/etc/nsswitch.conf", None, linux.MS_BIND)
    finally:
        linux.umount(SCRATCH, linux.MNT_DETACH)


def _die_with_parent(parent: int) -> None:
    linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before the signal was armed
        os._exit(1)


def _die_with_holder(alive: int) -> None:
    """init's parent is outside its PID namespace (getppid() says 0): the holder keeps the
    write end of a pipe open for life, so EOF on `alive` means it died before the signal was
    armed."""
    linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
    if select.select([alive], [], [], 0)[0]:
        os._exit(1)
    os.close(alive)


def exit_status(wait_status: int) -> int:
    """A wait status as a shell reports it: the exit code, or 128 + the signal."""
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    return os.waitstatus_to_exitcode(wait_status)


def _wait_forwarding(pid: int) -> NoReturn:
    """Forward job-control and termination signals to pid; exit with its status. The terminal
    sends SIGINT/SIGQUIT to the whole foreground group, the program included: ignore them."""
    for sig in FORWARDED:
        signal.signal(sig, lambda s, _f: os.kill(pid, s))
    for sig in (signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_IGN)
    while True:
        try:
            wpid, status = os.wait()
        except ChildProcessError:
            os._exit(1)
        except InterruptedError:
            continue
        if wpid == pid:
            os._exit(exit_status(status))


def _become(spec: Spec) -> NoReturn:
    """The program's process: drop to the target user with no capability, then exec."""
    try:
        t = spec.target
        if spec.rootless:
            linux.unshare(linux.CLONE_NEWUSER)  # inside it the user is itself again, not root
            linux.map_ids(t.uid, 0, t.gid, 0)
            linux.drop_capabilities()
        else:
            linux.drop_capabilities()
            os.setgroups(list(t.groups))
            os.setresgid(t.gid, t.gid, t.gid)
            os.setresuid(t.uid, t.uid, t.uid)
        for sig in RESET:
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        path = spec.argv[0]
        if "/" not in path:  # as a shell does: a PATH entry we may not read is not "found"
            path = shutil.which(path, path=t.env.get("PATH", system.DEFAULT_PATH)) or ""
        os.execve(path, list(spec.argv), t.env)
    except FileNotFoundError:
        sys.stderr.write(f"netspectre run: {spec.argv[0]}: command not found\n")
        os._exit(127)
    except OSError as exc:
        sys.stderr.write(f"netspectre run: {spec.argv[0]}: {exc.strerror or exc}\n")
        os._exit(126)


def _init(spec: Spec, alive: int) -> NoReturn:
    """PID 1 of the run's PID namespace: its own /proc, then the program."""
    try:
        _die_with_holder(alive)
        linux.mount("proc", "/proc", "proc", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC)
    except OSError as exc:
        sys.stderr.write(f"netspectre run: cannot set up the PID namespace: {exc}\n")
        os._exit(125)
    pid = os.fork()
    if pid == 0:
        _become(spec)
    # The kernel already refuses the capability-less program a ptrace of init (its permitted
    # capabilities are no superset of init's); not dumpable is a second lock. After the fork:
    # the program must still write its own /proc/self maps.
    linux.prctl(linux.PR_SET_DUMPABLE, 0)
    _wait_forwarding(pid)


def _send(chan: socket.socket, message: dict[str, object], fds: list[int]) -> None:
    socket.send_fds(chan, [json.dumps(message).encode()], fds)


def holder(chan: socket.socket, spec: Spec) -> NoReturn:
    """The forked child: build the sandbox, report to the relay, run init; never returns."""
    try:
        uid, gid = os.getuid(), os.getgid()
        flags = linux.CLONE_NEWNET | linux.CLONE_NEWNS
        if spec.rootless:
            linux.unshare(linux.CLONE_NEWUSER | flags)
            linux.map_ids(0, uid, 0, gid)
        else:
            linux.unshare(flags)
        _die_with_parent(spec.relay_pid)
        ports, socks = build_network()
        build_files()
        # Last: the first child after this is the namespace's init (`nft` must not be).
        linux.unshare(linux.CLONE_NEWPID)
    except Error as exc:
        _send(chan, {"ok": False, "message": exc.message, "hint": exc.hint}, [])
        os._exit(125)
    except OSError as exc:
        _send(chan, {"ok": False, "message": str(exc), "errno": exc.errno}, [])
        os._exit(125)
    _send(chan, {"ok": True, "relay_port": ports.relay, "ipv6": ports.ipv6},
          [s.fileno() for s in socks])
    for s in socks:
        s.close()
    chan.close()
    alive, keep = os.pipe()  # keep: open in the holder until it dies (see _die_with_holder)
    pid = os.fork()
    if pid == 0:
        os.close(keep)
        _init(spec, alive)
    os.close(alive)
    _wait_forwarding(pid)
