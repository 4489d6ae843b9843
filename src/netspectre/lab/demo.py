"""`netspectre lab demo`: build a lab, run netspectre in its client namespace and prove, step by
step and with a capture of the client's uplink, that everything goes through Tor or nowhere;
then stop netspectre and take the lab down. Always cleans up (unless keep).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from netspectre import system
from netspectre.errors import CleanupFailed, Error, PermissionError_
from netspectre.lab import checks, steps
from netspectre.lab.spec import LabSpec, validate
from netspectre.lab.steps import DemoState
from netspectre.lab.steps import Hooks as Hooks

BACKENDS = ("nft", "iptables-nft", "iptables-legacy")


def intro(spec: LabSpec) -> dict[str, Any]:
    """What the first screen explains: the namespaces, the ranges, the checks."""
    validate(spec)
    return {
        "namespaces": {"internet": spec.inet_ns, "client": spec.client_ns,
                       "guest": spec.guest_ns},
        "ranges": [str(n) for n in spec.networks()],
        "relays": {"authorities": 3, "middles": spec.middles, "exits": spec.exits},
        "plan": [{"key": k, "title": t, "proves": p} for k, t, p in checks.PLAN],
    }


@contextmanager
def _no_interrupt() -> Iterator[None]:
    """Cleanup runs to the end: a second Ctrl-C must not leave half a lab behind."""
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _steps(st: DemoState) -> None:
    if not steps.lab_up(st).ok:
        st.skip_rest("the lab did not come up")
        return
    if steps.start(st).ok:
        for step in (steps.myip, steps.dns, steps.onion, steps.leaks, steps.verify,
                     steps.stop_and_judge):
            step(st)
    else:
        st.skip_rest("netspectre did not start", but=("stop", "lab_down"))
        steps.stop_and_judge(st, judge=False)
    steps.lab_down(st)


def _run(st: DemoState) -> dict[str, Any]:
    t0 = time.monotonic()
    finished = False
    try:
        _steps(st)
        finished = True
    finally:
        if not finished:
            with _no_interrupt():
                cleanup(st)
    return report(st, time.monotonic() - t0)


def cleanup(st: DemoState) -> None:
    """After an exception or Ctrl-C: stop netspectre in the client, take the lab down."""
    if st.cap is not None:
        st.cap.stop()
        st.cap = None
    if st.keep or (st.info is None and not st.building):
        return
    failures: list[Error] = []
    if st.started and not st.stopped:
        out = st.netspectre("stop", "--force", timeout=90)
        if out.rc != 0:
            failures.append(Error(f"netspectre stop in {st.spec.client_ns}: {out.said}"))
    try:
        steps.teardown(st)
    except CleanupFailed as exc:
        failures += exc.failures
    except Error as exc:
        failures.append(exc)
    if failures:
        error = CleanupFailed(failures)
        error.hint = "`netspectre lab down` (with the same --config) removes what is left"
        raise error


def report(st: DemoState, total: float) -> dict[str, Any]:
    failed = [c.check for c in st.checks if c.ok is False]
    skipped = [c.check for c in st.checks if c.ok is None]
    return {
        "ok": not failed and not skipped and bool(st.checks),
        "total_s": round(total, 3),
        "passed": sum(1 for c in st.checks if c.ok),
        "failed": failed,
        "skipped": skipped,
        "checks": [checks.row(c) for c in st.checks],
        "backend": st.used_backend or None,
        "kept": st.keep,
        "lab": intro(st.spec) | {"onion": st.info.onion if st.info else None},
    }


def require(spec: LabSpec) -> None:
    validate(spec)
    if os.geteuid() != 0:
        raise PermissionError_("the lab demo needs root (network namespaces)",
                               "run it with sudo: sudo netspectre lab demo")
    for tool in ("ip", "tor", "tor-gencert", "sysctl", "tcpdump"):
        system.require(tool)


def run(spec: LabSpec, *, hooks: Hooks, backend: str | None = None,
        keep: bool = False) -> dict[str, Any]:
    """The whole demo; returns the report ({"ok": ..., "checks": [...]})."""
    require(spec)
    if backend is not None and backend not in BACKENDS:
        raise Error(f"unknown backend {backend!r}", "one of " + ", ".join(BACKENDS))
    return _run(DemoState(spec, backend, keep, hooks))
