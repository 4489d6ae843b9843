"""Static IPv6 addresses and routes: disabling IPv6 deletes them and re-enabling does not bring
them back (only link-local and autoconfigured ones return), so `start` records them and `stop`
re-adds what is missing. Parsing and planning are pure; snapshot/restore run `ip`.
"""

from __future__ import annotations

import json
from typing import Any

from netspectre import system
from netspectre.errors import Error

ADDR_FLAGS = ("nodad", "noprefixroute", "mngtmpaddr", "optimistic", "home")
# Routes the kernel or router advertisements recreate by themselves.
AUTOMATIC_PROTOCOLS = ("kernel", "ra")


def parse_addrs(ip_json: str) -> list[dict[str, Any]]:
    """`ip -j -6 addr show` → static global addresses ({dev, local, prefixlen, flags})."""
    found = []
    for link in json.loads(ip_json or "[]"):
        for a in link.get("addr_info", []):
            if a.get("family") != "inet6" or a.get("scope") not in ("global", "site"):
                continue
            if a.get("dynamic") or a.get("valid_life_time", 0) != 4294967295:
                continue  # SLAAC/DHCPv6: their daemon or the kernel brings them back
            found.append({
                "dev": link["ifname"],
                "local": a["local"],
                "prefixlen": int(a["prefixlen"]),
                "flags": [f for f in ADDR_FLAGS if a.get(f)],
            })
    return found


def parse_routes(ip_json: str) -> list[dict[str, Any]]:
    """`ip -j -6 route show table all` → routes someone configured (not kernel/RA, unicast)."""
    found = []
    for r in json.loads(ip_json or "[]"):
        if r.get("protocol") in AUTOMATIC_PROTOCOLS or r.get("type", "unicast") != "unicast":
            continue
        if "dev" not in r:
            continue
        found.append({k: r[k] for k in ("dst", "gateway", "dev", "metric", "table", "protocol",
                                         "pref") if k in r})
    return found


def _addr_key(a: dict[str, Any]) -> tuple[str, str, int]:
    return (a["dev"], a["local"], a["prefixlen"])


def _route_key(r: dict[str, Any]) -> tuple[str, str, str, str]:
    return (r["dst"], r.get("gateway", ""), r["dev"], str(r.get("table", "main")))


def plan(saved: dict[str, Any], current: dict[str, Any]) -> list[list[str]]:
    """`ip` commands that put back the saved addresses, then routes, missing from `current`."""
    have_addrs = {_addr_key(a) for a in current.get("addrs", [])}
    have_routes = {_route_key(r) for r in current.get("routes", [])}
    argvs = []
    for a in saved.get("addrs", []):
        if _addr_key(a) not in have_addrs:
            argvs.append(["ip", "-6", "addr", "add", f"{a['local']}/{a['prefixlen']}",
                          "dev", a["dev"], *a["flags"]])
    for r in saved.get("routes", []):
        if _route_key(r) in have_routes:
            continue
        argv = ["ip", "-6", "route", "replace", r["dst"]]
        if "gateway" in r:
            argv += ["via", r["gateway"]]
        argv += ["dev", r["dev"]]
        for key, word in (("metric", "metric"), ("table", "table"), ("protocol", "proto"),
                          ("pref", "pref")):
            if key in r:
                argv += [word, str(r[key])]
        argvs.append(argv)
    return argvs


# --- shell ---------------------------------------------------------------------------------


def snapshot() -> dict[str, Any]:
    if system.which("ip") is None:
        return {}
    addrs = system.run(["ip", "-j", "-6", "addr", "show"], check=False).stdout
    routes = system.run(["ip", "-j", "-6", "route", "show", "table", "all"], check=False).stdout
    return {"addrs": parse_addrs(addrs), "routes": parse_routes(routes)}


def restore(saved: dict[str, Any]) -> list[Error]:
    if not saved.get("addrs") and not saved.get("routes"):
        return []
    failures: list[Error] = []
    for argv in plan(saved, snapshot()):
        try:
            system.run(argv)
        except Error as exc:  # an interface that is gone: report, restore the rest
            failures.append(exc)
    return failures
