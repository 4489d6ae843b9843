"""`lab up`, `down` and `status`: build the lab (lab/build.py), wait (by polling, never by
fixed sleeps) until its onion service is published; tear it all down by name and PID, also
after a crashed `up`.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from netspectre import paths, system
from netspectre.errors import CleanupFailed, Error, PermissionError_, StateError, TorError
from netspectre.lab import build, consensus, network, processes
from netspectre.lab import info as lab_info
from netspectre.lab.build import ONION, ONION_TIMEOUT, UPLOADS
from netspectre.lab.info import LabInfo
from netspectre.lab.spec import LabSpec, layout, validate

OnStep = Callable[[str, float], None]

def _require_root() -> None:
    if os.geteuid() != 0:
        raise PermissionError_(
            "the lab needs root (network namespaces)", "run it with sudo"
        )


def _noop(_: str, __: float) -> None:
    pass


def up(
    spec: LabSpec,
    *,
    on_step: OnStep = _noop,
    wait_for_onion: bool = True,
    cleanup_on_failure: bool = True,
) -> LabInfo:
    """Build the lab; return once the consensus lists every relay and, with wait_for_onion,
    the onion service's descriptor is on every HSDir (else call wait_onion before fetching
    the onion). Refuses when any part of it already exists."""
    validate(spec)
    _require_root()
    for tool in ("ip", "tor", "tor-gencert", "sysctl"):
        system.require(tool)
    network.check_ranges(spec, network.host_routes())
    leftovers = sorted(network.existing_namespaces() & set(spec.namespaces))
    if leftovers or spec.dir.exists():
        what = ", ".join(leftovers) or str(spec.dir)
        raise StateError(
            f"the lab is already up (or left over from a crash): {what}",
            "run `netspectre lab down` first",
        )
    start = time.monotonic()
    timings: dict[str, float] = {}

    def step(message: str, key: str) -> None:
        timings[key] = round(time.monotonic() - start, 3)
        on_step(message, timings[key])

    try:
        info = build.build(spec, layout(spec), step, timings)
        if wait_for_onion:
            wait_onion(info, timeout=ONION_TIMEOUT)
            step(f"onion service {info.onion} published", "onion")
        lab_info.save(info)
        return info
    except BaseException as exc:
        if cleanup_on_failure:
            kept = _keep_logs(spec) if spec.dir.is_dir() else None
            try:
                _teardown(spec, keep_failed=True)
            except Error:
                pass  # the error that made `up` fail is the one to report
            if kept is not None and isinstance(exc, Error):
                exc.hint = f"logs of the failed lab: {kept}" + (
                    f" ({exc.hint})" if exc.hint else ""
                )
        raise


def onion_progress(spec: LabSpec) -> dict[str, Any]:
    """What the upload watcher recorded: {"ready": bool, "uploaded": [HSDir nicks], ...}."""
    try:
        value: dict[str, Any] = json.loads((spec.dir / ONION / UPLOADS).read_text())
    except (OSError, ValueError):
        return {"ready": False}
    return value


def wait_onion(info: LabInfo, *, timeout: float = ONION_TIMEOUT) -> float:
    """Wait until the onion service's descriptors are on every HSDir; return the seconds
    waited. A client that asks too early gets 404s from all of them and then waits 15 minutes
    before asking again."""
    start = time.monotonic()
    while not (progress := onion_progress(info.spec)).get("ready"):
        if time.monotonic() - start > timeout:
            raise TorError(
                f"the onion service's descriptor did not reach every HSDir in {timeout:.0f} s "
                f"(uploaded to {progress.get('uploaded') or 'none'})",
                f"see {info.dir / ONION / 'notice.log'}",
            )
        time.sleep(0.1)
    return time.monotonic() - start


def down(spec: LabSpec) -> None:
    """Stop every lab process by PID, delete the namespaces, /etc/netns files and the lab
    directory (and logs kept from a failed `up`). Idempotent; works after a crash of `up`
    (finds everything by name)."""
    validate(spec)
    _require_root()
    _teardown(spec, keep_failed=False)


def _failed_dir(spec: LabSpec) -> Path:
    return spec.dir.with_name(spec.dir.name + ".failed")


def _worth_keeping(path: Path) -> bool:
    if path.is_dir():
        return path.name not in ("keys", "hs", "diff-cache")  # no secrets, no bulk
    return path.suffix in (".log", ".json", ".conf") or path.name in ("torrc", "bandwidths")


def _keep_logs(spec: LabSpec) -> Path | None:
    """Copy the logs and configuration of a failed `up` out of the lab directory."""
    kept = _failed_dir(spec)
    try:
        shutil.rmtree(kept, ignore_errors=True)
        shutil.copytree(
            spec.dir,
            kept,
            ignore=lambda where, names: [n for n in names if not _worth_keeping(Path(where, n))],
        )
    except OSError:
        return None
    return kept


def _teardown(spec: LabSpec, *, keep_failed: bool) -> None:
    failures: list[Error] = []
    failures += processes.stop(p.pid for p in processes.find(spec))
    failures += network.delete(spec)
    dirs = [spec.dir] if keep_failed else [spec.dir, _failed_dir(spec)]
    # netspectre's own dirs for the client namespace (paths.detect names them after it): Tor's
    # cached consensus and guards there are signed by keys that die with this lab.
    dirs += [root / f"netns-{spec.client_ns}"
             for root in (paths.LIB_ROOT, paths.RUN_ROOT, paths.TOR_RUN_ROOT)]
    for d in dirs:
        if d.exists():
            try:
                shutil.rmtree(d)
            except OSError as exc:
                failures.append(Error(f"cannot remove {d}: {exc}"))
    try:
        spec.run_root.rmdir()
    except OSError:
        pass
    if failures:
        raise CleanupFailed(failures)


def status(spec: LabSpec) -> dict[str, Any]:
    """What is running: namespaces, processes (with RSS), the consensus, the onion address."""
    validate(spec)
    present = network.existing_namespaces()
    procs = processes.find(spec)
    try:
        info = lab_info.load(spec)
    except (Error, ValueError, KeyError) as exc:
        info = None
        problem: str | None = str(exc)
    else:
        problem = None
    result: dict[str, Any] = {
        "dir": str(spec.dir),
        "namespaces": {ns: ns in present for ns in spec.namespaces},
        "processes": [
            {"name": p.name, "pid": p.pid, "ns": p.ns, "rss_kib": p.rss_kib} for p in procs
        ],
        "rss_kib_total": sum(p.rss_kib for p in procs),
    }
    if problem:
        result["problem"] = problem
    if info is not None:
        lay = info.layout
        want = {r.nick for r in lay.relays}
        listed = consensus.relays(spec)
        running = {p.name for p in procs}
        expected = want | {ONION, "web", "dns"}
        if info.bridge_line:
            expected.add(lay.bridge.nick)
        result |= {
            "onion": info.onion,
            "check_url": info.check_url,
            "client_config": str(info.client_config_path),
            "consensus": {
                "relays": sorted(listed),
                "missing": sorted(want - set(listed)),
            },
            "missing_processes": sorted(expected - running),
            "onion_descriptor": onion_progress(spec),
            "timings": info.timings,
        }
    result["up"] = bool(
        info is not None
        and all(result["namespaces"].values())
        and not result.get("missing_processes")
        and not result["consensus"]["missing"]
    )
    return result


def shell_argv(spec: LabSpec, shell: str | None = None) -> list[str]:
    """The command that opens a shell in the lab's client namespace."""
    return network.ns_argv(spec.client_ns, [shell or "/bin/bash"])
