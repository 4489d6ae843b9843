"""The Tor netspectre runs itself: preflight, launch under a supervisor, stop, supervise.

Managed mode runs our own tor under a supervisor (`netspectre _supervise`, a detached root
process); system mode uses the running tor and only checks it (preflight).
"""

from __future__ import annotations

import os
import time

from netspectre import fsutil, system
from netspectre.config import DEFAULT_PATH, Config, TorMode
from netspectre.errors import ConfigError, TorError
from netspectre.paths import Paths
from netspectre.plan import Plan
from netspectre.policy import HostFacts
from netspectre.tor import dirs, process, supervisor, systemtor, users
from netspectre.tor.connect import system_controller
from netspectre.tor.control import ControlError
from netspectre.tor.layout import Files
from netspectre.tor.record import Endpoints, TorRecord

# -- preflight ------------------------------------------------------------------------------


def preflight(config: Config, paths: Paths, plan: Plan) -> None:
    """Everything that can refuse before the system is touched."""
    if plan.torrc is None:
        _preflight_system(config, plan.endpoints)
        return
    tor = system.require("tor")
    _tor_accepts(tor, plan.torrc, config)
    _check_ports(config, plan.endpoints, Files.of(paths))


def _tor_accepts(tor: str, text: str, config: Config) -> None:
    """`tor --verify-config` on the rendered torrc; ConfigError with tor's own words."""
    result = system.run(
        [tor, "--verify-config", "-f", "-", "--defaults-torrc", os.devnull],
        input=text, check=False, timeout=60,
    )
    if result.returncode == 0:
        return
    said = [
        line.split("] ", 1)[-1]
        for line in (result.stdout + result.stderr).splitlines()
        if "[warn]" in line or "[err]" in line
    ]
    raise ConfigError(
        "tor rejects the generated torrc: " + (said[0] if said else f"exit {result.returncode}"),
        f"check [tor] torrc_extra and bridges in {config.path or DEFAULT_PATH}"
        + ("; tor also said: " + " / ".join(said[1:3]) if len(said) > 1 else ""),
    )


def _check_ports(config: Config, endpoints: Endpoints, files: Files) -> None:
    ours = set(process.ours(files).values())
    clashes: list[tuple[str, int, str]] = []
    for key, port, udp in (
        ("tor.trans_port", endpoints.trans_port, False),
        ("tor.socks_port", endpoints.socks_port, False),
        ("tor.dns_port", endpoints.dns_port, True),
        *((("gateway.trans_port", config.gateway.trans_port, False),
           ("gateway.dns_port", config.gateway.dns_port, True))
          if config.gateway.interfaces else ()),
    ):
        if not process.port_in_use(port, udp=udp):
            continue
        owners = process.port_owners(port, udp=udp)
        if owners and set(owners) <= ours:
            continue  # our own tor from an earlier start: launch replaces it
        who = ", ".join(process.describe(p) for p in owners) or "another program"
        clashes.append((key, port, who))
    if clashes:
        raise TorError(
            "port already in use: "
            + "; ".join(f"{port}/{'udp' if 'dns' in key else 'tcp'} ({key}) by {who}"
                        for key, port, who in clashes),
            "set " + ", ".join(k for k, _, _ in clashes)
            + f" in {config.path or DEFAULT_PATH} to free ports, or stop that "
            "program (netspectre runs its own tor next to a system tor on other ports)",
        )


def _preflight_system(config: Config, endpoints: Endpoints) -> None:
    try:
        with system_controller(endpoints.control) as ctl:
            listeners = ctl.getinfo("net/listeners/trans", "net/listeners/dns")
            conf = ctl.getconf("VirtualAddrNetworkIPv4", "AutomapHostsOnResolve")
    except ControlError:
        lacking = systemtor.from_ports(
            config,
            trans=process.port_in_use(endpoints.trans_port, udp=False),
            dns=process.port_in_use(endpoints.dns_port, udp=True),
        )
        if lacking:
            raise systemtor.refuse(
                list(systemtor.wanted(config).values()),
                how=f"no control port at {endpoints.control}, and nothing listens on "
                + " and ".join(line.split()[1] for line in lacking),
            ) from None
        return  # ports are there; VirtualAddrNetworkIPv4/Automap cannot be checked
    lacking = systemtor.missing(config, listeners, conf)
    if lacking:
        raise systemtor.refuse(lacking, how="read over its control port")


# -- launch / stop --------------------------------------------------------------------------


def launch(config: Config, paths: Paths, plan: Plan, facts: HostFacts) -> TorRecord:
    """Start what we run (managed mode); return the record `stop` needs. Fast: no waiting."""
    if plan.torrc is None:
        return TorRecord(endpoints=plan.endpoints)
    files = Files.of(paths)
    account = dirs.account(facts.tor_user)
    leftovers = _stop_ours(files)  # from a crashed run: only one tor may use the DataDirectory
    if leftovers:
        raise TorError("; ".join(leftovers), "end it, then run `netspectre start` again")
    dirs.prepare(paths, account)
    for stale in (files.control, files.cookie):
        process.remove(stale)  # so waiting never talks to a dead socket or reads an old cookie
    # tor reads it as root at start; the tor group lets a SIGHUP reload work after the drop.
    fsutil.write_atomic(files.torrc, plan.torrc, mode=0o640, owner=(0, account.gid))
    argv, env = system.self_argv(*(["--config", config.path] if config.path else []),
                                 "_supervise")
    # O_APPEND: the supervisor, tor and this handle all write to it without clobbering.
    with open(files.supervisor_log, "a", encoding="utf-8") as log:
        log.truncate(0)
        os.fchmod(log.fileno(), 0o600)
        child = system.spawn(argv, stdout=log, cwd=files.run, env=env, new_session=True)
    process.write_pid(files.supervisor_pid, child.pid)
    return TorRecord(
        endpoints=plan.endpoints,
        torrc_sha256=plan.torrc_sha256,
        supervisor_pid=child.pid,
        tor_user=account.name,
        torrc=str(files.torrc),
        data_directory=str(files.data),
        started=time.time(),
    )


def converge(config: Config, paths: Paths, record: TorRecord | None, plan: Plan,
             facts: HostFacts) -> tuple[TorRecord, bool]:
    """The Tor of `plan` behind a firewall already in force: keep the running one when it
    matches, else (re)launch it. → (record, relaunched). Meanwhile traffic is blocked."""
    if plan.torrc is None:
        if record is not None and record.mode is TorMode.MANAGED:
            stop(record, paths)  # switched to the system tor: ours goes
        return TorRecord(endpoints=plan.endpoints), False
    if (record is not None and record.mode is TorMode.MANAGED
            and record.torrc_sha256 == plan.torrc_sha256 and record.tor_user == facts.tor_user
            and "supervisor" in process.ours(Files.of(paths))):
        return record, False
    stop(record, paths)
    return launch(config, paths, plan, facts), True


def _stop_ours(files: Files, record: TorRecord | None = None) -> list[str]:
    """End our supervisor (it stops its tor), then any tor of ours still alive. → failures."""
    failures: list[str] = []
    sups = {process.read_pid(files.supervisor_pid)}
    if record is not None and record.supervisor_pid:
        sups.add(record.supervisor_pid)
    for pid in sorted(p for p in sups if p):
        ok = process.terminate(
            pid, lambda p: process.is_our_supervisor(p, files),
            timeout=15.0,
        )
        if not ok:
            failures.append(f"the tor supervisor (pid {pid}) did not exit")
    for pid in sorted({p for p in map(process.read_pid, (files.tor_pid, files.daemon_pid)) if p}):
        if not process.terminate(pid, lambda p: process.is_our_tor(p, files)):
            failures.append(f"tor (pid {pid}) did not exit")
    if not failures:
        for path in (files.supervisor_pid, files.tor_pid):
            process.remove(path)
    return failures


def stop(record: TorRecord | None, paths: Paths) -> None:
    """Stop the tor we started (found by record or pid files, verified in /proc); keep its data."""
    if record is not None and record.mode is TorMode.SYSTEM:
        return
    failures = _stop_ours(Files.of(paths), record)
    if failures:
        raise TorError(
            "; ".join(failures),
            "run `netspectre stop` again; the firewall stays on until tor is gone",
        )


# -- supervisor -----------------------------------------------------------------------------


def supervise(config: Config, paths: Paths) -> int:
    """Body of `netspectre _supervise` (started by launch): keep our tor running until SIGTERM."""
    files = Files.of(paths)
    if config.tor.mode is TorMode.SYSTEM:
        raise TorError("tor.mode = \"system\": netspectre does not supervise the system tor")
    if not files.torrc.exists():
        raise TorError(f"{files.torrc} is missing", "`netspectre start` writes it")
    tor = system.require("tor")
    name = users.torrc_user([files.torrc])
    account = dirs.account(name) if name else None

    def prepare() -> None:
        if account is not None:
            dirs.prepare(paths, account)

    with open(files.supervisor_log, "a", encoding="utf-8") as log:
        return supervisor.run(files, tor=tor, log=log, prepare=prepare)

