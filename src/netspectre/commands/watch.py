"""watch: a frame a second while active: the counters with rates, Tor's control-port view, and
every refused packet our log rules sent, attributed to its uid and (best effort) program.

Between frames it blocks on the nflog socket; the counters are read at most as often as
keeps their cost (an `nft`/`iptables-save` process) under 1 % of the wall clock.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator

from netspectre import backends, nflog, packets, sockets, state
from netspectre.backends.names import LOG_GROUP
from netspectre.commands import Context, require_root
from netspectre.errors import Error
from netspectre.paths import Paths
from netspectre.state import Phase
from netspectre.tor.control import Controller
from netspectre.tor.protocol import parse_bootstrap
from netspectre.tor.record import Endpoints
from netspectre.watchframes import CounterRate, Frame, Tally, TorLive, rates

SUMMARY_EVERY = 10  # frames between plain/JSON summaries
COUNTER_SHARE = 0.01  # the counters' read may take this share of the time at most
TOR_KEYS = ("status/bootstrap-phase", "circuit-status", "traffic/read", "traffic/written")


def tor_live(values: dict[str, str]) -> TorLive:
    """GETINFO answers → TorLive. Pure."""
    boot = parse_bootstrap(values.get("status/bootstrap-phase", ""))
    circuits = sum(1 for line in values.get("circuit-status", "").splitlines()
                   if len(line.split()) > 1 and line.split()[1] == "BUILT")

    def number(key: str) -> int | None:
        text = values.get(key, "").strip()
        return int(text) if text.isdigit() else None

    return TorLive(bootstrap=boot.progress if boot else None,
                   summary=boot.summary if boot else "", circuits=circuits,
                   read=number("traffic/read"), written=number("traffic/written"))


class TorPoll:
    """One control connection kept open across frames; reconnects after a failure."""

    def __init__(self, endpoints: Endpoints, paths: Paths) -> None:
        self.endpoints, self.paths = endpoints, paths
        self._ctl: Controller | None = None
        self._retry = 0.0

    def poll(self) -> TorLive:
        from netspectre.tor.connect import controller

        now = time.monotonic()
        try:
            if self._ctl is None:
                if now < self._retry:
                    return TorLive(error="control port unreachable (retrying)")
                self._ctl = controller(self.endpoints, self.paths, timeout=1.0)
            return tor_live(self._ctl.getinfo(*TOR_KEYS))
        except Error as exc:
            self.close()
            self._retry = now + 5.0
            return TorLive(error=exc.message)

    def close(self) -> None:
        if self._ctl is not None:
            self._ctl.close()
            self._ctl = None


def attribute(tally: Tally, logged: nflog.Logged, programs: sockets.Programs,
              at: float) -> None:
    packet = packets.parse(logged.payload)
    if packet is None:
        return
    if logged.prefix == "blocked_forward":
        program = f"forwarded from {packet.src}"
    elif logged.prefix == "gateway_refused":  # from a [gateway] client, not a local program
        program = f"gateway client {packet.src}"
    else:
        src = socket.inet_pton(socket.AF_INET if packet.family == 4 else socket.AF_INET6,
                               packet.src)
        program = programs.lookup(packet.proto, src, packet.sport)
    tally.add(uid=logged.uid, program=program, counter=logged.prefix or "?", packet=packet,
              at=at)


def watch(ctx: Context, *, interval: float = 1.0,
          clock: Callable[[], float] = time.monotonic) -> Iterator[Frame]:
    """Frames until the caller stops iterating (Ctrl-C)."""
    require_root("watch")
    current = state.load_current(ctx.paths.state)
    if current is None or current.phase is not Phase.ACTIVE:
        raise Error("netspectre is not active: there is nothing to watch",
                    "start it first: sudo netspectre start")
    if not current.firewall:
        raise Error("netspectre runs Tor only (--no-firewall): no ruleset, nothing refused "
                    "to watch", "sudo netspectre start (without --no-firewall)")
    firewall = backends.open(current.backend, ctx.runner)
    endpoints = current.tor.endpoints if current.tor else Endpoints.of(ctx.config)
    tor = TorPoll(endpoints, ctx.paths)
    tally, programs = Tally(), sockets.Programs()
    listener = nflog.Listener(LOG_GROUP)
    try:
        read_at = clock()
        before = _counters(firewall)
        cost = clock() - read_at
        counters = rates(before, before, 0.0)
        frame_no = 0
        deadline = clock()
        while True:
            now = clock()
            if now >= deadline:
                if now - read_at >= max(interval, cost / COUNTER_SHARE):
                    start = clock()
                    after = _counters(firewall)
                    cost = clock() - start
                    counters = rates(before, after, start - read_at)
                    before, read_at = after, start
                yield Frame(at=time.time(), backend=current.backend.value, counters=counters,
                            tor=tor.poll(), attempts=tally.all(), changed=tally.changed(),
                            summary=frame_no % SUMMARY_EVERY == 0, lost=listener.lost)
                frame_no += 1
                deadline += interval
                if deadline < clock():  # we fell behind (suspend): no burst of frames
                    deadline = clock() + interval
                continue
            for logged in listener.receive(deadline - now):
                attribute(tally, logged, programs, time.time())
    finally:
        listener.close()
        tor.close()


def _counters(firewall: backends.Firewall) -> dict[str, dict[str, int]]:
    try:
        return firewall.counters()
    except Error:
        return {}


__all__ = ["CounterRate", "Frame", "TorPoll", "attribute", "tor_live", "watch"]
