"""netspectre run inside the lab's client namespace, as a user would there: its configuration,
where it keeps its files, `start` followed event by event, other commands, and probe batches
(lab/agent.py). Shared by `lab demo` and bench/lab.py.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netspectre import system
from netspectre.config import parse as parse_config
from netspectre.errors import Error
from netspectre.lab import network, processes
from netspectre.lab.info import LabInfo, client_config
from netspectre.tor.protocol import BootstrapEvent

BOOTSTRAP_TIMEOUT = 60


def argv(ns: str, config: Path, args: Sequence[str]) -> list[str]:
    """`netspectre --json --config CONFIG ARGS` in namespace ns, with this very netspectre."""
    return network.ns_argv(ns, processes.self_command("--json", "--config", str(config), *args,
                                                      module="netspectre"))


def config_text(info: LabInfo, *, backend: str | None = None,
                bootstrap_timeout: int = BOOTSTRAP_TIMEOUT) -> str:
    """The lab's client.toml with a shorter bootstrap timeout and, if asked, a backend."""
    text = client_config(info, backend=backend, bootstrap_timeout=bootstrap_timeout)
    parsed = parse_config(text)
    if backend and parsed.firewall.backend.value != backend:
        raise Error(f"could not set firewall.backend = {backend!r} in the client's config")
    return text


def json_doc(text: str) -> dict[str, Any]:
    """The report a `netspectre --json` command printed last (after any event lines)."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("{") and not line.startswith('{"event"'):
            try:
                value = json.loads("\n".join(lines[i:]))
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    return {}


@dataclass(frozen=True)
class Outcome:
    rc: int
    data: dict[str, Any]  # the --json report
    said: str  # netspectre's error and hint lines, else the end of its stderr
    seconds: float
    bootstrapped_s: float | None = None  # `start` only: until the 100 % event
    events: list[tuple[float, int]] = field(default_factory=list)  # (seconds, progress)


def _said(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.startswith(("netspectre:", "hint:"))]
    return " / ".join(lines) or stderr.strip()[-300:]


def run(ns: str, config: Path, *args: str, timeout: float = 60) -> Outcome:
    t0 = time.monotonic()
    try:
        result = system.run(argv(ns, config, args), check=False, timeout=timeout)
    except subprocess.TimeoutExpired:
        return Outcome(-1, {}, f"`netspectre {' '.join(args)}` did not finish in {timeout:g} s",
                       time.monotonic() - t0)
    return Outcome(result.returncode, json_doc(result.stdout), _said(result.stderr),
                   time.monotonic() - t0)


def start(ns: str, config: Path, on_event: Callable[[BootstrapEvent], None]) -> Outcome:
    """`netspectre start`, following its bootstrap events as they come."""
    t0 = time.monotonic()
    events: list[tuple[float, int]] = []
    lines: list[str] = []
    with tempfile.TemporaryFile() as err:
        proc = system.spawn(argv(ns, config, ["start"]), stdout=subprocess.PIPE, stderr=err)
        assert proc.stdout is not None
        try:
            for raw in proc.stdout:
                line = raw.decode(errors="replace").rstrip("\n")
                if not line.startswith('{"event"'):
                    lines.append(line)
                    continue
                ev = json.loads(line)
                events.append((time.monotonic() - t0, int(ev["progress"])))
                on_event(BootstrapEvent(int(ev["progress"]), str(ev["tag"]), str(ev["summary"])))
            rc = proc.wait()
        finally:
            if proc.poll() is None:  # interrupted: the caller's `stop --force` follows
                proc.terminate()
                proc.wait()
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    done = next((t for t, progress in events if progress >= 100), None)
    return Outcome(rc, json_doc("\n".join(lines)), _said(stderr), time.monotonic() - t0,
                   done, events)


def probes(ns: str, batch: Sequence[dict[str, Any]], *, timeout: float = 90
           ) -> list[dict[str, Any]]:
    """Run lab/agent.py's probes at once inside ns; one result per probe, errors included."""
    cmd = network.ns_argv(ns, processes.python_argv("agent", [json.dumps(list(batch))]))
    try:
        r = system.run(cmd, check=False, timeout=timeout)
    except subprocess.TimeoutExpired:
        return [{"error": f"probe runner did not finish in {timeout:g} s"} for _ in batch]
    try:
        value = json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        value = None
    if not isinstance(value, list) or len(value) != len(batch):
        why = r.stderr.strip().splitlines()[-1:] or [f"exit {r.returncode}"]
        return [{"error": f"probe runner failed: {why[0]}"} for _ in batch]
    return value


def sysctl(ns: str, key: str) -> str:
    r = system.run(network.ns_argv(ns, ["sysctl", "-n", key]), check=False)
    return r.stdout.strip()
