"""The raw guard's watcher: `netspectre _guard`, a small root process that guards interfaces
created after `start` (a USB tether, a VPN's tun, a new veth) within a second.

It listens on rtnetlink (RTMGRP_LINK) and, when the set of interfaces changes, re-commits only
`table netdev netspectre` for the interfaces there are now, from the policy in force (written
by `start`/`restart` beside the state, never the config on disk). If it dies, the guard it
last committed stays: the known interfaces stay closed. Launched and found like the tor
supervisor: a pid file, verified in /proc (argv and cwd) before any signal.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import socket
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING

from netspectre import facts as host_facts
from netspectre import fsutil, proc, system
from netspectre.paths import Paths
from netspectre.policy import Policy

if TYPE_CHECKING:
    from netspectre.state import State

COMMAND = "_guard"
RTMGRP_LINK = 1
RTM_NEWLINK, RTM_DELLINK = 16, 17


def pid_file(paths: Paths) -> Path:
    return paths.run / "guard.pid"


def policy_file(paths: Paths) -> Path:
    return paths.run / "guard-policy.json"


def log_file(paths: Paths) -> Path:
    return paths.run / "guard.log"


def write_policy(paths: Paths, policy: Policy) -> None:
    fsutil.write_atomic(policy_file(paths), json.dumps(asdict(policy), default=str) + "\n",
                        mode=0o600)


def read_policy(paths: Paths) -> Policy:
    data = json.loads(policy_file(paths).read_text())
    data["virtual_network"] = ipaddress.IPv4Network(data["virtual_network"])
    if data.get("virtual_network6"):
        data["virtual_network6"] = ipaddress.IPv6Network(data["virtual_network6"])
    for key in ("lan4", "lan6", "guard_devices", "gateway"):
        if key in data:
            data[key] = tuple(data[key])
    for key in ("bypass_users", "bypass_groups"):  # (name, id) pairs; absent in older files
        data[key] = tuple((str(n), int(i)) for n, i in data.get(key, ()))
    return Policy(**data)


def is_ours(pid: int, paths: Paths, root: Path = proc.PROC) -> bool:
    try:
        raw = (root / str(pid) / "cmdline").read_bytes()
        cwd = os.readlink(root / str(pid) / "cwd")
    except OSError:
        return False
    argv = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
    return (COMMAND in argv and any("netspectre" in a for a in argv)
            and cwd == os.path.realpath(paths.run))


def running(paths: Paths, recorded: int | None = None) -> int | None:
    """The live watcher of this namespace (by pid file, else the recorded pid), verified."""
    for pid in (proc.read_pid(pid_file(paths)), recorded):
        if pid is not None and proc.alive(pid) and is_ours(pid, paths):
            return pid
    return None


def launch(paths: Paths, config_path: str | None) -> int:
    argv, env = system.self_argv(*(["--config", config_path] if config_path else []), COMMAND)
    with open(log_file(paths), "a", encoding="utf-8") as log:
        os.fchmod(log.fileno(), 0o600)
        child = system.spawn(argv, stdout=log, cwd=paths.run, env=env, new_session=True)
    proc.write_pid(pid_file(paths), child.pid)
    return child.pid


def converge(paths: Paths, policy: Policy, config_path: str | None,
             recorded: int | None) -> int | None:
    """The watcher for `policy` (its policy file rewritten; started if gone) → its pid; with
    the guard off, none (a running one is stopped)."""
    if not policy.raw_guard:
        stop(paths, recorded)
        return None
    write_policy(paths, policy)
    pid = running(paths, recorded)
    return pid if pid is not None else launch(paths, config_path)


def stop(paths: Paths, recorded: int | None = None) -> list[str]:
    """End the watcher (before the rules are lifted: it must not re-commit after). → failures."""
    pids = {p for p in (proc.read_pid(pid_file(paths)), recorded) if p}
    left = proc.terminate_all(pids, lambda p: is_ours(p, paths), timeout=5.0)
    if left:
        return [f"the raw guard's watcher (pid {', '.join(map(str, sorted(left)))}) did not exit"]
    proc.remove(pid_file(paths))
    proc.remove(policy_file(paths))
    return []


def status(paths: Paths, current: State, runner: system.Runner) -> dict[str, object]:
    """The raw guard as the kernel has it now (status, verify, doctor): on/off (why), the
    interfaces its table covers, every interface there is, and whether the watcher runs."""
    from netspectre.backends import guard
    from netspectre.backends.names import Backend

    pol = current.policy
    out: dict[str, object] = {"raw_guard": pol.get("raw_guard", "off")}
    if pol.get("raw_guard") != "on":
        out["reason"] = pol.get("raw_guard_off") or "recorded by a netspectre without the guard"
        return out
    listing = ""
    if current.backend is Backend.NFT and runner.which("nft"):
        listing = runner.run(["nft", "list", "table", "netdev", guard.TABLE], check=False).stdout
    out["in_force"] = bool(listing)
    out["guarded"] = list(guard.guarded(listing))
    out["interfaces"] = list(host_facts.interfaces())
    out["watcher_pid"] = running(paths, current.guard_pid)
    return out


def link_events(data: bytes) -> int:
    """How many RTM_NEWLINK/RTM_DELLINK messages a datagram holds. Pure."""
    count, offset = 0, 0
    while offset + 16 <= len(data):
        length = int.from_bytes(data[offset:offset + 4], "little")
        kind = int.from_bytes(data[offset + 4:offset + 6], "little")
        if length < 16:
            break
        count += kind in (RTM_NEWLINK, RTM_DELLINK)
        offset += (length + 3) & ~3
    return count


def run(paths: Paths) -> int:
    """Body of `netspectre _guard`: until SIGTERM, keep the netdev table on every interface."""
    from netspectre.backends.nft_shell import NftFirewall

    firewall = NftFirewall(system.HOST)

    def note(message: str) -> None:
        # Like the tor supervisor: a daemon's notes go to its own log (launch opened it as
        # our stdout), never through cli's printing.
        sys.stdout.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} guard[{os.getpid()}]: "
                         f"{message}\n")
        sys.stdout.flush()

    def sync(committed: tuple[str, ...] | None) -> tuple[str, ...] | None:
        now = host_facts.interfaces()
        if now == committed:
            return committed
        try:
            policy = replace(read_policy(paths), guard_devices=now)
            firewall.apply_guard(policy)
        except Exception as exc:  # the guard in force stays; the next event tries again
            note(f"re-committing the guard for {', '.join(now)} failed: {exc}")
            return None
        note(f"guarding {', '.join(now) or 'no interface'}")
        return now

    proc.write_pid(pid_file(paths), os.getpid())
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                       socket.NETLINK_ROUTE) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind((0, RTMGRP_LINK))  # subscribed before the first sync: nothing is missed
        # start committed the guard for the policy's interfaces: re-committing the same would
        # only reset blocked_raw (a new table starts its counter at 0).
        try:
            known: tuple[str, ...] | None = read_policy(paths).guard_devices
        except (OSError, ValueError, TypeError, KeyError):
            known = None
        committed = sync(known)
        note("watching links")
        lost = b"\0" * 16
        while True:
            sock.settimeout(None if committed is not None else 1.0)  # a failed commit: retry
            try:
                data = sock.recv(1 << 16)
            except OSError:  # ENOBUFS (events lost) or the retry timer: read the truth
                data = lost
            if data == lost or link_events(data):
                with contextlib.suppress(OSError):
                    while sock.recv(1 << 16, socket.MSG_DONTWAIT):  # a burst is one sync
                        pass
                committed = sync(committed)
