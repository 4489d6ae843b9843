"""Following Tor's bootstrap to 100 %, and what tor last complained about in its logs."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from netspectre.config import TorMode
from netspectre.errors import TorError
from netspectre.paths import Paths
from netspectre.tor import process
from netspectre.tor.connect import controller
from netspectre.tor.control import ControlError
from netspectre.tor.layout import Files
from netspectre.tor.protocol import BootstrapEvent, parse_bootstrap
from netspectre.tor.record import Endpoints


def tail(path: Path, lines: int = 3) -> str:
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


def wait(
    endpoints: Endpoints, paths: Paths, on_event: Callable[[BootstrapEvent], None], *,
    timeout: float,
) -> None:
    """Follow Tor's bootstrap until 100 %; TorError naming the last phase on timeout.

    Survives tor restarts (the control connection is re-opened). The firewall is not
    touched here: on timeout it keeps blocking.
    """
    files = Files.of(paths)
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

    managed = endpoints.mode is TorMode.MANAGED
    while True:
        if managed and "supervisor" not in process.ours(files):
            raise TorError(
                "the tor supervisor is not running",
                f"its log: {tail(files.supervisor_log) or files.supervisor_log}; "
                "the firewall stays on; `netspectre stop` lifts it",
            )
        try:
            with controller(endpoints, paths, timeout=2.0) as ctl:
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
