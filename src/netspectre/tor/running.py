"""Asking the Tor in use: its status, new circuits (NEWNYM), the exit check (myip)."""

from __future__ import annotations

from netspectre.config import DEFAULT_PATH, Config, TorMode
from netspectre.errors import Error, TorError
from netspectre.paths import Paths
from netspectre.status import ExitReport, NewnymReport, TorStatus
from netspectre.tor import exitcheck, process
from netspectre.tor.connect import controller, socks_proxy
from netspectre.tor.layout import Files
from netspectre.tor.protocol import BootstrapEvent, parse_bootstrap, parse_newnym_delay
from netspectre.tor.record import Endpoints, TorRecord

NEWNYM_INTERVAL = 10  # seconds: Tor's MAX_SIGNEWNYM_RATE


def status(endpoints: Endpoints, paths: Paths, record: TorRecord | None) -> TorStatus:
    """Tor as it is now, on the recorded endpoints (record None: nothing of ours active)."""
    trans = process.port_in_use(endpoints.trans_port, udp=False)
    dns = process.port_in_use(endpoints.dns_port, udp=True)
    socks = process.port_in_use(endpoints.socks_port, udp=False)
    files = Files.of(paths)
    managed = endpoints.mode is TorMode.MANAGED
    found = process.ours(files) if managed else {}
    running = "tor" in found if managed else trans and dns
    bootstrap = _bootstrap_now(endpoints, paths) if running else None
    up = bool(running and trans and dns)
    restarting = "supervisor" in found
    if not up:
        message = ("Tor is down — traffic blocked"
                   + (" (the supervisor is restarting it)" if restarting else "")
                   if record is not None else "Tor is not running")
    elif bootstrap is not None and bootstrap.progress < 100:
        message = f"Tor is bootstrapping ({bootstrap.progress} %: {bootstrap.summary})"
    else:
        message = "Tor is up" + (" (bootstrapped 100 %)" if bootstrap else "")
    return TorStatus(
        mode=endpoints.mode, trans_port_listening=trans, dns_port_listening=dns,
        socks_port_listening=socks, running=running, up=up, message=message,
        bootstrap=bootstrap.progress if bootstrap else None,
        bootstrap_phase=f"{bootstrap.tag}: {bootstrap.summary}" if bootstrap else None,
        bootstrap_warning=bootstrap.warning if bootstrap else "",
        supervisor_pid=found.get("supervisor"), supervisor_running=restarting,
        tor_pid=found.get("tor"),
        notice_log=str(files.notice_log) if managed else "",
        data_directory=str(files.data) if managed else "",
        control="" if managed else endpoints.control,
    )


def _bootstrap_now(endpoints: Endpoints, paths: Paths) -> BootstrapEvent | None:
    try:
        with controller(endpoints, paths, timeout=2.0) as ctl:
            phase = ctl.getinfo("status/bootstrap-phase").get("status/bootstrap-phase", "")
    except Error:
        return None
    return parse_bootstrap(phase)


def newnym(endpoints: Endpoints, paths: Paths) -> NewnymReport:
    """SIGNAL NEWNYM; say whether Tor rate-limited it (it answers 250 OK either way)."""
    with controller(endpoints, paths) as ctl:
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
    return NewnymReport(rate_limited=delay is not None, delay_seconds=delay or 0,
                        message=message)


def myip(config: Config, endpoints: Endpoints) -> ExitReport:
    """Ask the exit-check service (then the fallbacks) through Tor's SocksPort."""
    proxy = socks_proxy(endpoints)
    failed: list[str] = []
    for url in (config.check.url, *config.check.fallbacks):
        try:
            is_tor, ip = exitcheck.fetch(url, proxy, timeout=config.check.timeout)
        except TorError as exc:
            failed.append(f"{url}: {exc.message}")
            continue
        return ExitReport(is_tor=is_tor, ip=ip, url=url, proxy=f"{proxy[0]}:{proxy[1]}",
                          failed=tuple(failed))
    raise TorError(
        "no exit-check service answered through Tor: " + "; ".join(failed),
        "is Tor up? (`netspectre status`); set [check] url / fallbacks in "
        f"{config.path or DEFAULT_PATH} to services that answer {{\"IsTor\": …, \"IP\": …}}",
    )
