"""`lab up`, `down` and `status`: build the namespaces, start the private Tor network and its
servers, wait (by polling, never by fixed sleeps) until the network is usable; tear it all down
by name and PID, also after a crashed `up`.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from netspectre import paths, system
from netspectre.errors import CleanupFailed, Error, PermissionError_, StateError, TorError
from netspectre.lab import consensus, control, keys, network, processes, torrc
from netspectre.lab import info as lab_info
from netspectre.lab.info import LabInfo
from netspectre.lab.spec import DNS_PORT, WEB_PORT, LabSpec, Layout, Role, layout, validate

OnStep = Callable[[str, float], None]

CONSENSUS_TIMEOUT = 90.0
ONION_TIMEOUT = 90.0
ECHO_NAME = "echo.test"
ONION = "onion"  # the onion service tor's directory
UPLOADS = "uploads.json"  # written by lab/watch.py


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
        return _build(spec, layout(spec), step, timings, wait_for_onion=wait_for_onion)
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


def _build(
    spec: LabSpec,
    lay: Layout,
    step: Callable[[str, str], None],
    timings: dict[str, float],
    *,
    wait_for_onion: bool,
) -> LabInfo:
    d = spec.dir
    d.mkdir(mode=0o700, parents=True)
    defaults = d / "empty"  # --defaults-torrc and the GeoIP files
    defaults.write_text("")
    resolv = d / "resolv.conf"
    resolv.write_text(f"nameserver {lay.dns4}\n")
    onion = d / ONION

    with ThreadPoolExecutor(max_workers=8) as pool:
        # Key generation (mostly tor-gencert's RSA-3072) overlaps building the network.
        auth_jobs = [
            pool.submit(keys.authority, r, d / r.nick, defaults=defaults)
            for r in lay.authorities
        ]
        relay_jobs = {
            r.nick: pool.submit(keys.relay_fingerprint, d / r.nick, defaults=defaults)
            for r in lay.relays
            if r.role is not Role.AUTHORITY
        }
        network.create(spec, lay)
        step("namespaces and links", "network")
        _start_servers(spec, lay)
        step("web server and DNS responders", "servers")
        authorities = tuple(job.result() for job in auth_jobs)
        fingerprints = {a.relay.nick: a.fingerprint for a in authorities}
        fingerprints |= {nick: job.result() for nick, job in relay_jobs.items()}
        step("keys and certificates", "keys")

        bandwidths = d / "bandwidths"
        bandwidths.write_text(torrc.bandwidths(fingerprints.values(), now=time.time()))
        offset = consensus.initial_offset(time.time())
        torrcs: list[Path] = []
        for r in lay.relays:
            torrcs.append(d / r.nick / "torrc")
            torrcs[-1].write_text(
                torrc.relay(
                    r,
                    data=d / r.nick,
                    authorities=authorities,
                    resolv_conf=resolv,
                    bandwidths=bandwidths,
                    offset=offset,
                    empty=defaults,
                )
            )
        onion.mkdir(mode=0o700)
        torrcs.append(onion / "torrc")
        torrcs[-1].write_text(
            torrc.onion_service(
                data=onion, authorities=authorities, web=str(lay.web4), empty=defaults
            )
        )
        natural = consensus.next_boundary(
            time.time(), interval=torrc.INITIAL_VOTING_INTERVAL, offset=offset
        )
        jobs: list[Future[None]] = [
            pool.submit(processes.start_tor, spec.inet_ns, t, defaults=defaults) for t in torrcs
        ]
        for job in jobs:
            job.result()
    info = LabInfo(
        spec=spec,
        layout=lay,
        authorities=authorities,
        fingerprints=fingerprints,
        onion=_read_when_there(onion / "hs" / "hostname", timeout=CONSENSUS_TIMEOUT),
        timings=timings,
    )
    lab_info.save(info)
    processes.start_python(spec.inet_ns, "watch", [
        "--control", str(onion / "control"),
        *(a for r in lay.authorities for a in ("--hsdir", r.nick)),
        "--out", str(onion / UPLOADS), "--timeout", str(CONSENSUS_TIMEOUT + ONION_TIMEOUT),
        "--pidfile", str(d / "watch.pid"), "--log", str(d / "watch.log"),
    ])
    step(f"{len(lay.relays)} relays and the onion service started", "relays")

    deadline = time.monotonic() + CONSENSUS_TIMEOUT
    consensus.wait_descriptors(spec, lay, deadline=deadline)
    valid_after = consensus.schedule(spec, lay, natural=natural)
    moved = "" if valid_after == natural else " (vote moved)"
    step(f"every authority has every descriptor; consensus due in "
         f"{valid_after - time.time():.1f} s{moved}", "descriptors")
    consensus.wait_listed(spec, lay, deadline=deadline)
    step(f"consensus lists all {len(lay.relays)} relays", "consensus")
    with control.connect(onion / "control") as ctl:
        ctl.command("SETCONF DisableNetwork=0")
    if wait_for_onion:
        wait_onion(info, timeout=ONION_TIMEOUT)
        step(f"onion service {info.onion} published", "onion")
    lab_info.save(info)
    return info


def _read_when_there(path: Path, *, timeout: float) -> str:
    """A daemonised tor returns once its listeners are open, before it loads or creates keys."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TorError(f"tor did not create {path} in {timeout:.0f} s",
                           f"see {path.parent.parent / 'notice.log'}")
        time.sleep(0.05)
    return path.read_text().strip()


def _start_servers(spec: LabSpec, lay: Layout) -> None:
    d = spec.dir
    exits = [a for r in lay.exits for a in ("--exit", str(r.v4), "--exit", str(r.v6))]
    processes.start_python(spec.inet_ns, "web", [
        "--listen", f"{lay.web4}:{WEB_PORT}", "--listen", f"[{lay.web6}]:{WEB_PORT}", *exits,
        "--pidfile", str(d / "web.pid"), "--log", str(d / "web.log"),
    ])
    names = ["--name", f"{ECHO_NAME}={lay.web4}", "--name", f"{ECHO_NAME}={lay.web6}"]
    processes.start_python(spec.inet_ns, "dns", [
        "--listen", f"{lay.dns4}:{DNS_PORT}", "--listen", f"[{lay.dns6}]:{DNS_PORT}",
        "--listen", f"{lay.resolver4}:{DNS_PORT}", "--listen", f"[{lay.resolver6}]:{DNS_PORT}",
        *names, "--pidfile", str(d / "dns.pid"), "--log", str(d / "dns.log"),
    ])


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
