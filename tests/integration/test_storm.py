"""Issue 2, points 2 (`restart`: no moment without protection) and Tests: a sender blasting
new TCP connections, UDP and ICMP at outside targets through 50 `restart`s leaks nothing;
through stop/start cycles it leaks only while stopped (which also proves the detector).
Issue 9: a `restart` that moves the TransPort, under the same storm, leaks nothing either, and
TCP goes to the new port afterwards."""

from __future__ import annotations

import time

import pytest

from tests.support.topology import (
    BACKENDS,
    DNS_OUT,
    TRANS_PORT,
    WEB,
    Topology,
    outgoing,
    show,
)

pytestmark = pytest.mark.root

RESTARTS = 50
CYCLES = 3
PORT_MOVES = 10
NEW_TRANS_PORT = TRANS_PORT + 1
_SERVING_NEW_PORT: set[int] = set()  # stand-in tor agents already listening on it
TARGETS = [
    {"kind": "tcp", "dst": WEB, "port": 80},
    {"kind": "tcp", "dst": WEB, "port": 443},
    {"kind": "udp", "dst": WEB, "port": 443},
    {"kind": "udp", "dst": WEB, "port": 3478},
    {"kind": "udp", "dst": DNS_OUT, "port": 53},
    {"kind": "icmp", "dst": WEB},
]


def _storm(t: Topology, seconds: float) -> None:
    # Bounded in time and rounds: it stops by itself even if the test dies half-way.
    t.root.call("storm_start", targets=TARGETS, max_seconds=seconds, max_rounds=200_000,
                pause=0.001)


@pytest.mark.parametrize("backend", BACKENDS)
def test_storm_through_restarts(clean: Topology, backend: str) -> None:
    t = clean
    cfg = t.config(backend)
    t.start(cfg)
    cap = t.capture("storm-restart")
    _storm(t, seconds=120)
    try:
        for i in range(RESTARTS):
            run = t.netspectre(cfg, "restart")
            assert run.rc == 0, f"restart {i}: {run}"
    finally:
        counts = t.root.call("storm_stop")["counts"]
    packets = t.finish(cap)
    t.stop(cfg)
    assert counts["rounds"] > RESTARTS, counts
    leaked = outgoing(packets)
    assert not leaked, f"{len(leaked)} packets leaked during {RESTARTS} restarts " \
                       f"(storm {counts}):\n{show(leaked)}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_storm_through_stop_start(clean: Topology, backend: str) -> None:
    t = clean
    cfg = t.config(backend)
    cap = t.capture("storm-cycles")
    windows: list[tuple[float, float]] = []
    _storm(t, seconds=60)
    try:
        for _ in range(CYCLES):
            t.start(cfg)
            begin = time.time()
            t.netspectre(cfg, "status")  # some time active under fire
            end = time.time()
            windows.append((begin, end))
            t.stop(cfg)
    finally:
        counts = t.root.call("storm_stop")["counts"]
    packets = t.finish(cap)
    out = outgoing(packets)
    during = [p for p in out if any(b <= p.ts <= e for b, e in windows)]
    between = [p for p in out if not any(b <= p.ts <= e for b, e in windows)]
    assert between, f"nothing leaked while stopped: the storm or the capture is dead ({counts})"
    assert not during, f"{len(during)} packets left while active:\n{show(during)}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_restart_moves_the_trans_port_without_a_leak(clean: Topology, backend: str) -> None:
    t = clean
    cfg = t.config(backend)
    t.start(cfg)
    # The stand-in tor answers on both ports; its events say which listener took a connection.
    # Its agent lives as long as the topology, so the second listener is opened once.
    if id(t.tor) not in _SERVING_NEW_PORT:
        t.tor.call("serve_tcp", addr="127.0.0.1", port=NEW_TRANS_PORT, role="tor-new",
                   fake_tor=True)
        _SERVING_NEW_PORT.add(id(t.tor))
    cap = t.capture("storm-port")
    _storm(t, seconds=120)
    try:
        for i in range(PORT_MOVES):
            port = NEW_TRANS_PORT if i % 2 == 0 else TRANS_PORT
            t.config(backend, trans_port=port)
            before = t.netspectre(cfg, "status").data
            assert "tor ports" in before.get("config_differs", ""), before
            run = t.netspectre(cfg, "restart")
            assert run.rc == 0, f"restart {i}: {run}"
            after = t.netspectre(cfg, "status").data
            assert after["policy"]["trans_port"] == port and "config_differs" not in after
    finally:
        counts = t.root.call("storm_stop")["counts"]
    packets = t.finish(cap)
    assert counts["rounds"] > PORT_MOVES, counts
    leaked = outgoing(packets)
    assert not leaked, f"{len(leaked)} packets leaked while the TransPort moved " \
                       f"(storm {counts}):\n{show(leaked)}"
    # Last move was back to TRANS_PORT: move once more and use the new port for real.
    t.config(backend, trans_port=NEW_TRANS_PORT)
    assert t.netspectre(cfg, "restart").rc == 0
    t.tor.call("events")
    got = t.root.call("tcp", dst=WEB, port=80, data="hello")
    assert got["banner"] == f"TOR {WEB} 80", got
    roles = {e["role"] for e in t.tor.call("events")["events"] if e["event"] == "connect"}
    assert roles == {"tor-new"}, roles
    t.stop(cfg)
