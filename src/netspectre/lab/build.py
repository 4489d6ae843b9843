"""What `lab up` builds, in order: the lab directory, keys (overlapping the namespaces), the web
and DNS servers, every relay's torrc and tor, the onion service and its upload watcher; then
it waits (by polling) until every authority has every descriptor and the consensus lists all.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from netspectre import system
from netspectre.errors import TorError
from netspectre.lab import consensus, control, keys, network, processes, torrc
from netspectre.lab import info as lab_info
from netspectre.lab.info import LabInfo
from netspectre.lab.spec import DNS_PORT, ECHO_NAME, WEB_PORT, LabSpec, Layout, Relay, Role
from netspectre.tor.bridges import PLUGINS

CONSENSUS_TIMEOUT = 90.0
ONION_TIMEOUT = 90.0
ONION = "onion"  # the onion service tor's directory
UPLOADS = "uploads.json"  # written by lab/watch.py
BRIDGELINE = Path("pt_state") / "obfs4_bridgeline.txt"  # written by obfs4proxy (lyrebird)


def obfs4_plugin() -> str | None:
    """The obfs4 plugin the lab's bridge serves with (the client side uses netspectre's own
    choice); None: no bridge in this lab."""
    return next((p for p in map(system.which, PLUGINS["obfs4"]) if p), None)


def build(
    spec: LabSpec, lay: Layout, step: Callable[[str, str], None], timings: dict[str, float]
) -> LabInfo:
    """Everything `up` starts, in order, until the consensus lists every relay and the onion
    service is let onto the network (its descriptor is still to be published)."""
    d = spec.dir
    d.mkdir(mode=0o700, parents=True)
    defaults = d / "empty"  # --defaults-torrc and the GeoIP files
    defaults.write_text("")
    resolv = d / "resolv.conf"
    resolv.write_text(f"nameserver {lay.dns4}\n")
    onion = d / ONION
    plugin = obfs4_plugin()
    bridges = (lay.bridge,) if plugin else ()
    tors = (*lay.relays, *bridges)

    with ThreadPoolExecutor(max_workers=8) as pool:
        # Key generation (mostly tor-gencert's RSA-3072) overlaps building the network.
        auth_jobs = [
            pool.submit(keys.authority, r, d / r.nick, defaults=defaults)
            for r in lay.authorities
        ]
        relay_jobs = {
            r.nick: pool.submit(keys.relay_fingerprint, d / r.nick, defaults=defaults)
            for r in tors
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
        for r in tors:
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
                    obfs4proxy=plugin or "",
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
        ctl.command("SETCONF DisableNetwork=0")  # now it may publish its descriptor
    if plugin:
        # Read after the consensus: obfs4proxy has long written it, nothing waits for it.
        info = dataclasses.replace(info, bridge_line=_bridge_line(d, lay.bridge, fingerprints))
        step(f"obfs4 bridge at {lay.bridge.v4}", "bridge")
    return info


def _bridge_line(d: Path, bridge: Relay, fingerprints: dict[str, str]) -> str:
    """Polled until whole: obfs4proxy writes the file in place, not by rename."""
    path = d / bridge.nick / BRIDGELINE
    deadline = time.monotonic() + CONSENSUS_TIMEOUT
    while True:
        try:
            return torrc.obfs4_bridge_line(bridge, fingerprints[bridge.nick], path.read_text())
        except (OSError, ValueError) as exc:
            if time.monotonic() > deadline:
                raise TorError(f"no usable obfs4 bridge line in {path}: {exc}",
                               f"see {path.parent.parent / 'notice.log'}") from None
        time.sleep(0.05)


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
