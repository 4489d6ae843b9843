"""The raw guard's checks: in force on each interface (from `nft list table netdev
netspectre`), and its watcher running. Pure: judges what guardwatch.status read."""

from __future__ import annotations

from collections.abc import Mapping

from netspectre.findings import Finding

RESTART = "sudo netspectre restart"


def findings(g: Mapping[str, object]) -> list[Finding]:
    if g.get("raw_guard") != "on":
        return [Finding("raw guard (AF_PACKET senders)", None, f"off: {g.get('reason')}",
                        'use the nft backend on kernel 5.16+ with raw_guard = "auto" or "on"')]
    if not g.get("in_force"):
        return [Finding("raw guard in force (table netdev netspectre)", False,
                        "table netdev netspectre is missing (removed by hand?): raw sockets "
                        "can send past the rules", RESTART)]
    raw_guarded, raw_all = g.get("guarded"), g.get("interfaces")
    guarded = [str(x) for x in raw_guarded] if isinstance(raw_guarded, list) else []
    every = [str(x) for x in raw_all] if isinstance(raw_all, list) else []
    out = [Finding(f"raw guard on {name}", name in guarded,
                   "egress chain in force" if name in guarded else "no egress chain: raw "
                   "frames leave this interface", RESTART) for name in every]
    pid = g.get("watcher_pid")
    out.append(Finding("raw guard's watcher running", pid is not None,
                       f"pid {pid}" if pid is not None else "not running: interfaces created "
                       "from now on are not guarded (the known ones stay guarded)", RESTART))
    return out
