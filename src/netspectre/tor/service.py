"""What `commands` asks of Tor: preflight, launch, wait, stop, status, newnym, myip, supervise.

Managed mode runs our own tor under a supervisor (`netspectre _supervise`, a detached root
process); system mode uses the running tor and only checks it. Imports are lazy so `status`
and the supervisor stay small.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from netspectre.config import DEFAULT_PATH, Config, TorMode
from netspectre.errors import ConfigError, Error, TorError
from netspectre.paths import Paths
from netspectre.policy import HostFacts
from netspectre.tor.layout import Files
from netspectre.tor.protocol import BootstrapEvent as BootstrapEvent

if TYPE_CHECKING:
    from netspectre.tor.control import Controller
    from netspectre.tor.users import Account

NEWNYM_INTERVAL = 10  # seconds: Tor's MAX_SIGNEWNYM_RATE


def port_listening(port: int, host: str = "127.0.0.1", *, udp: bool = False) -> bool:
    # A bind test, not a connect: a connection to the TransPort makes tor try to reach
    # itself through an exit and log "No Tor server allows exit to …:9040" on every `status`.
    return port_in_use(port, udp=udp, host=host)


def port_in_use(port: int, *, udp: bool, host: str = "127.0.0.1") -> bool:
    """Would tor fail to bind host:port? (SO_REUSEADDR like tor, so TIME_WAIT does not count.)"""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
    try:
        if not udp:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
    except OSError:
        return True
    finally:
        s.close()
    return False


# -- preflight ------------------------------------------------------------------------------


def preflight(config: Config, paths: Paths, facts: HostFacts) -> None:
    """Everything that can refuse before the system is touched."""
    if config.tor.mode is TorMode.SYSTEM:
        _preflight_system(config)
        return
    from netspectre import system
    from netspectre.tor import torrc

    tor = system.require("tor")
    text = torrc.render(config, paths, facts, which=system.which)
    _verify(tor, text, config)
    _check_ports(config, Files.of(paths))


def _verify(tor: str, text: str, config: Config) -> None:
    from netspectre import system

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


def _check_ports(config: Config, files: Files) -> None:
    from netspectre.tor import process

    ours = set(process.ours(files).values())
    clashes: list[tuple[str, int, str]] = []
    for key, port, udp in (
        ("tor.trans_port", config.tor.trans_port, False),
        ("tor.socks_port", config.tor.socks_port, False),
        ("tor.dns_port", config.tor.dns_port, True),
    ):
        if not port_in_use(port, udp=udp):
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
            + f" under [tor] in {config.path or DEFAULT_PATH} to free ports, or stop that "
            "program (netspectre runs its own tor next to a system tor on other ports)",
        )


def _preflight_system(config: Config) -> None:
    from netspectre.tor import systemtor
    from netspectre.tor.control import ControlError

    try:
        with _system_controller(config) as ctl:
            listeners = ctl.getinfo("net/listeners/trans", "net/listeners/dns")
            conf = ctl.getconf("VirtualAddrNetworkIPv4", "AutomapHostsOnResolve")
    except ControlError:
        lacking = systemtor.from_ports(
            config,
            trans=port_listening(config.tor.trans_port),
            dns=port_in_use(config.tor.dns_port, udp=True),
        )
        if lacking:
            raise systemtor.refuse(
                list(systemtor.wanted(config).values()),
                how=f"no control port at {config.tor.control}, and nothing listens on "
                + " and ".join(line.split()[1] for line in lacking),
            ) from None
        return  # ports are there; VirtualAddrNetworkIPv4/Automap cannot be checked
    lacking = systemtor.missing(config, listeners, conf)
    if lacking:
        raise systemtor.refuse(lacking, how="read over its control port")


def _system_controller(config: Config) -> Controller:
    from netspectre.tor.control import Controller

    ctl = Controller.connect(config.tor.control, timeout=3.0)
    try:
        ctl.authenticate()
    except Error:
        ctl.close()
        raise
    return ctl


# -- directories ----------------------------------------------------------------------------


def _account(name: str) -> Account:
    from netspectre.tor import users

    account = users.by_name(name)
    if account is None:
        raise ConfigError(f"the tor account {name!r} does not exist", "set tor.user")
    return account


def _searchable(path: Path, account: Account) -> bool:
    st = path.stat()
    if st.st_uid == account.uid:
        return bool(st.st_mode & 0o100)
    if st.st_gid == account.gid:
        return bool(st.st_mode & 0o010)
    return bool(st.st_mode & 0o001)


def _reach(target: Path, account: Account, fixable: tuple[Path, ...]) -> None:
    """Let the tor user search every directory above `target`: ours get o+x, others refuse."""
    for directory in target.parents:
        if _searchable(directory, account):
            continue
        if directory in fixable:
            # Search only (no listing): state.json and friends stay root's, 0600.
            os.chmod(directory, directory.stat().st_mode & 0o7777 | 0o001)
            continue
        raise TorError(
            f"the tor account {account.name} cannot reach {target}: {directory} is not "
            "searchable for it",
            f"chmod o+x {directory}, or point NETSPECTRE_RUN_DIR / NETSPECTRE_LIB_DIR elsewhere",
        )


def _owned_dir(path: Path, account: Account) -> None:
    """A 0700 directory owned by the tor account (tor insists), contents included."""
    path.mkdir(mode=0o700, parents=False, exist_ok=True)
    st = path.stat()
    if (st.st_uid, st.st_gid) != (account.uid, account.gid):
        for root, dirs, names in os.walk(path):
            for name in [*dirs, *names]:
                os.lchown(os.path.join(root, name), account.uid, account.gid)
        os.chown(path, account.uid, account.gid)
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)


def _prepare_dirs(paths: Paths, account: Account) -> None:
    files = Files.of(paths)
    paths.run.mkdir(mode=0o700, parents=True, exist_ok=True)
    files.run.mkdir(mode=0o700, exist_ok=True)
    files.daemon.parent.mkdir(mode=0o711, parents=True, exist_ok=True)
    _reach(files.daemon, account, fixable=(files.daemon.parent,))
    _owned_dir(files.daemon, account)
    paths.lib.mkdir(mode=0o711, parents=True, exist_ok=True)
    _reach(files.data, account, fixable=(paths.lib,))
    _owned_dir(files.data, account)


# -- launch / stop --------------------------------------------------------------------------


def launch(config: Config, paths: Paths, facts: HostFacts) -> dict[str, Any]:
    """Start what we run (managed mode); return the record `stop` needs. Fast: no waiting."""
    if config.tor.mode is TorMode.SYSTEM:
        return {"mode": config.tor.mode.value}
    import sys

    import netspectre
    from netspectre import system
    from netspectre.tor import process, torrc

    files = Files.of(paths)
    account = _account(facts.tor_user)
    text = torrc.render(config, paths, facts, which=system.which)
    leftovers = _stop_ours(files)  # from a crashed run: only one tor may use the DataDirectory
    if leftovers:
        raise TorError("; ".join(leftovers), "end it, then run `netspectre start` again")
    _prepare_dirs(paths, account)
    for stale in (files.control, files.cookie):
        process.remove(stale)  # so waiting never talks to a dead socket or reads an old cookie
    tmp = files.torrc.with_name(".torrc.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o640)
    try:
        os.write(fd, text.encode())
        # tor reads it as root at start; the tor group lets a SIGHUP reload work after the drop.
        os.fchown(fd, 0, account.gid)
        os.fchmod(fd, 0o640)
    finally:
        os.close(fd)
    os.replace(tmp, files.torrc)
    # -P: do not put the working directory (tor_run) on sys.path.
    argv = [sys.executable, "-P", "-m", "netspectre"]
    if config.path:
        argv += ["--config", config.path]
    argv.append("_supervise")
    env = dict(os.environ)
    package_root = str(Path(netspectre.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (package_root, env.get("PYTHONPATH", "")) if p
    )
    # O_APPEND: the supervisor, tor and this handle all write to it without clobbering.
    with open(files.supervisor_log, "a", encoding="utf-8") as log:
        log.truncate(0)
        os.fchmod(log.fileno(), 0o600)
        child = system.spawn(argv, stdout=log, cwd=files.run, env=env, new_session=True)
    process.write_pid(files.supervisor_pid, child.pid)
    return {
        "mode": config.tor.mode.value,
        "supervisor_pid": child.pid,
        "tor_user": account.name,
        "torrc": str(files.torrc),
        "data_directory": str(files.data),
        "started": time.time(),
    }


def _stop_ours(files: Files, record: dict[str, Any] | None = None) -> list[str]:
    """End our supervisor (it stops its tor), then any tor of ours still alive. → failures."""
    from netspectre.tor import process

    failures: list[str] = []
    sups = {process.read_pid(files.supervisor_pid)}
    if record and isinstance(record.get("supervisor_pid"), int):
        sups.add(record["supervisor_pid"])
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


def stop(record: dict[str, Any] | None, paths: Paths) -> None:
    """Stop the tor we started (found by record or pid files, verified in /proc); keep its data."""
    if record is not None and record.get("mode") == TorMode.SYSTEM.value:
        return
    failures = _stop_ours(Files.of(paths), record)
    if failures:
        raise TorError(
            "; ".join(failures),
            "run `netspectre stop` again; the firewall stays on until tor is gone",
        )


# -- bootstrap ------------------------------------------------------------------------------


def _managed_controller(paths: Paths, *, timeout: float = 5.0) -> Controller:
    from netspectre.tor.control import Controller

    files = Files.of(paths)
    ctl = Controller.connect(files.control, timeout=timeout)
    try:
        ctl.authenticate(files.cookie)
    except Error:
        ctl.close()
        raise
    return ctl


def _controller(config: Config, paths: Paths, *, timeout: float = 5.0) -> Controller:
    if config.tor.mode is TorMode.SYSTEM:
        return _system_controller(config)
    return _managed_controller(paths, timeout=timeout)


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return " / ".join(line.strip() for line in text.splitlines()[-lines:] if line.strip())


def complaint(files: Files) -> str:
    """Tor's last [err] line (else its last [warn]) from the supervisor's log and tor's own."""
    lines: list[str] = []
    for path in (files.supervisor_log, files.notice_log):
        try:
            lines += path.read_text(errors="replace").splitlines()[-200:]
        except OSError:
            continue
    for level in ("[err]", "[warn]"):
        found = [line.split(level, 1)[1].strip() for line in lines if level in line]
        if found:
            return found[-1]
    return ""


def wait_bootstrap(
    config: Config, paths: Paths, on_event: Callable[[BootstrapEvent], None]
) -> None:
    """Follow Tor's bootstrap until 100 %; TorError naming the last phase on timeout.

    Survives tor restarts (the control connection is re-opened). The firewall is not
    touched here: on timeout it keeps blocking.
    """
    from netspectre.tor import process
    from netspectre.tor.control import ControlError
    from netspectre.tor.protocol import parse_bootstrap

    files = Files.of(paths)
    timeout = config.tor.bootstrap_timeout
    deadline = time.monotonic() + timeout
    last: BootstrapEvent | None = None
    warning = ""
    trouble = ""

    def emit(event: BootstrapEvent | None) -> None:
        nonlocal last, warning
        if event is None:
            return
        if event.warning:
            warning = event.warning
        if last is None or (event.progress, event.tag, event.warning) != (
            last.progress, last.tag, last.warning
        ):
            on_event(event)
        last = event

    managed = config.tor.mode is TorMode.MANAGED
    while True:
        if managed and "supervisor" not in process.ours(files):
            raise TorError(
                "the tor supervisor is not running",
                f"its log: {_tail(files.supervisor_log) or files.supervisor_log}; "
                "the firewall stays on; `netspectre stop` lifts it",
            )
        try:
            with _controller(config, paths, timeout=2.0) as ctl:
                ctl.setevents("STATUS_CLIENT")
                phase = ctl.getinfo("status/bootstrap-phase").get("status/bootstrap-phase", "")
                emit(parse_bootstrap(phase))
                while last is None or last.progress < 100:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    reply = ctl.next_event(min(left, 1.0))
                    if reply is not None:
                        emit(parse_bootstrap(reply.text))
                    elif managed and "tor" not in process.ours(files):
                        break  # tor died; its supervisor restarts it
                if last is not None and last.progress >= 100:
                    return
        except ControlError as exc:
            if not managed:
                return  # a system tor we cannot follow: nothing more to wait for
            trouble = exc.message
        if time.monotonic() >= deadline:
            break
        time.sleep(0.2)  # tor (re)starting: its control socket appears within a second or so
    where = (
        f"last phase {last.progress} % ({last.tag}: {last.summary})"
        if last is not None
        else f"tor's control port never answered ({trouble or 'no reply'})"
    )
    if last is None and (said := complaint(files)):
        where += f"; tor said: {said}"
    raise TorError(
        f"Tor did not finish bootstrapping within {timeout:g} s; {where}"
        + (f"; last warning: {warning}" if warning else ""),
        "the firewall stays on, so traffic is blocked until Tor is up: check the network or "
        f"[tor] bridges, `netspectre status`, tor's log {files.notice_log}; "
        "`netspectre stop` lifts the block",
    )


# -- status ---------------------------------------------------------------------------------


def status(config: Config, paths: Paths, record: dict[str, Any] | None) -> dict[str, Any]:
    from netspectre.tor import process

    files = Files.of(paths)
    out: dict[str, Any] = {
        "mode": config.tor.mode.value,
        "trans_port_listening": port_listening(config.tor.trans_port),
        "dns_port_listening": port_in_use(config.tor.dns_port, udp=True),
        "socks_port_listening": port_listening(config.tor.socks_port),
    }
    if config.tor.mode is TorMode.MANAGED:
        found = process.ours(files)
        out.update(
            supervisor_pid=found.get("supervisor"),
            supervisor_running="supervisor" in found,
            tor_pid=found.get("tor"),
            running="tor" in found,
            notice_log=str(files.notice_log),
            data_directory=str(files.data),
        )
        running = "tor" in found
    else:
        out["control"] = config.tor.control
        running = out["trans_port_listening"] and out["dns_port_listening"]
        out["running"] = running
    bootstrap = _bootstrap_now(config, paths) if running else None
    out["bootstrap"] = bootstrap.progress if bootstrap else None
    out["bootstrap_phase"] = f"{bootstrap.tag}: {bootstrap.summary}" if bootstrap else None
    if bootstrap and bootstrap.warning:
        out["bootstrap_warning"] = bootstrap.warning
    up = bool(running and out["trans_port_listening"] and out["dns_port_listening"])
    out["up"] = up
    if not up:
        restarting = out.get("supervisor_running", False)
        if record is not None:
            out["message"] = "Tor is down — traffic blocked" + (
                " (the supervisor is restarting it)" if restarting else "")
        else:
            out["message"] = "Tor is not running"
    elif bootstrap is not None and bootstrap.progress < 100:
        out["message"] = f"Tor is bootstrapping ({bootstrap.progress} %: {bootstrap.summary})"
    else:
        out["message"] = "Tor is up" + (" (bootstrapped 100 %)" if bootstrap else "")
    return out


def _bootstrap_now(config: Config, paths: Paths) -> BootstrapEvent | None:
    from netspectre.tor.protocol import parse_bootstrap

    try:
        with _controller(config, paths, timeout=2.0) as ctl:
            phase = ctl.getinfo("status/bootstrap-phase").get("status/bootstrap-phase", "")
    except Error:
        return None
    return parse_bootstrap(phase)


# -- newnym / myip --------------------------------------------------------------------------


def newnym(config: Config, paths: Paths) -> dict[str, Any]:
    """SIGNAL NEWNYM; say whether Tor rate-limited it (it answers 250 OK either way)."""
    from netspectre.tor.protocol import parse_newnym_delay

    with _controller(config, paths) as ctl:
        ctl.setevents("NOTICE")
        ctl.signal("NEWNYM")
        # Tor handles the signal in the same main-loop turn and logs the rate-limit notice
        # before it reads our next command, so one round trip flushes that notice to us.
        ctl.getinfo("version")
        delay: int | None = None
        while (event := ctl.next_event(0)) is not None:
            found = parse_newnym_delay(event.text)
            if found is not None:
                delay = found
    if delay is None:
        message = (
            "new connections use new circuits now; existing connections keep theirs "
            f"(Tor allows one NEWNYM every {NEWNYM_INTERVAL} s)"
        )
    else:
        message = (
            f"Tor rate-limits NEWNYM to one every {NEWNYM_INTERVAL} s: the new identity takes "
            f"effect in {delay} s; existing connections keep their circuits"
        )
    return {
        "signal": "NEWNYM",
        "accepted": True,
        "rate_limited": delay is not None,
        "delay_seconds": delay or 0,
        "message": message,
    }


def _socks_proxy(config: Config, paths: Paths) -> tuple[str, int]:
    if config.tor.mode is TorMode.SYSTEM:
        from netspectre.tor.protocol import split_args

        try:
            with _system_controller(config) as ctl:
                value = ctl.getinfo("net/listeners/socks").get("net/listeners/socks", "")
        except Error:
            value = ""
        for word in split_args(value)[0]:
            host, _, port = word.rpartition(":")
            if port.isdigit() and host in ("127.0.0.1", "0.0.0.0"):
                return "127.0.0.1", int(port)
    return "127.0.0.1", config.tor.socks_port


def myip(config: Config, paths: Paths) -> dict[str, Any]:
    """Ask the exit-check service (then the fallbacks) through Tor's SocksPort."""
    from netspectre.tor import check

    proxy = _socks_proxy(config, paths)
    failed: list[str] = []
    for url in (config.check.url, *config.check.fallbacks):
        try:
            is_tor, ip = check.fetch(url, proxy, timeout=config.check.timeout)
        except TorError as exc:
            failed.append(f"{url}: {exc.message}")
            continue
        return {
            "IsTor": is_tor,
            "IP": ip,
            "url": url,
            "proxy": f"{proxy[0]}:{proxy[1]}",
            "failed": failed,
        }
    raise TorError(
        "no exit-check service answered through Tor: " + "; ".join(failed),
        "is Tor up? (`netspectre status`); set [check] url / fallbacks in "
        f"{config.path or DEFAULT_PATH} to services that answer {{\"IsTor\": …, \"IP\": …}}",
    )


# -- supervisor -----------------------------------------------------------------------------


def supervise(config: Config, paths: Paths) -> int:
    """Body of `netspectre _supervise` (started by launch): keep our tor running until SIGTERM."""
    from netspectre import system
    from netspectre.tor import supervisor, users

    files = Files.of(paths)
    if config.tor.mode is TorMode.SYSTEM:
        raise TorError("tor.mode = \"system\": netspectre does not supervise the system tor")
    if not files.torrc.exists():
        raise TorError(f"{files.torrc} is missing", "`netspectre start` writes it")
    tor = system.require("tor")
    name = users.torrc_user([files.torrc])
    account = _account(name) if name else None

    def prepare() -> None:
        if account is not None:
            _prepare_dirs(paths, account)

    with open(files.supervisor_log, "a", encoding="utf-8") as log:
        return supervisor.run(files, tor=tor, log=log, prepare=prepare)
