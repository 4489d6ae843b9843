"""The lab's namespaces, veths, addresses and routes; and the read-only check that its ranges
overlap no route of the host. Nothing here touches the host's own namespace beyond creating
and deleting the lab's named namespaces and their /etc/netns/<ns> files.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

from netspectre import system
from netspectre.errors import CommandFailed, ConfigError, Error
from netspectre.lab.spec import LabSpec, Layout

ETC_NETNS = Path("/etc/netns")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Interface names inside the lab (namespaced, so they never clash with the host's).
UPLINK = "uplink"  # client side of the client <-> internet veth
GATEWAY = "client0"  # internet side of it
GUEST_LINK = "guest0"  # client side of the client <-> guest veth
GUEST_ETH = "eth0"  # guest side of it
CT_BRIDGE = "nsbr0"  # the client's docker0: a Linux bridge with the containers' veths
CT_ETH = "eth0"  # a container's side of its veth


def ct_port(index: int) -> str:
    """The client's side of container `index`'s veth (1-based), a port of CT_BRIDGE."""
    return f"vethct{index}"


def ns_argv(ns: str, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


def host_routes() -> list[Network]:
    """Destinations of every non-default route of the host, in all tables (read-only)."""
    nets: list[Network] = []
    for family in ("-4", "-6"):
        out = system.run(["ip", "-j", family, "route", "show", "table", "all"]).stdout
        for route in json.loads(out or "[]"):
            dst = route.get("dst", "")
            if dst in ("", "default") or route.get("type") in ("multicast", "broadcast"):
                continue
            try:
                net = ipaddress.ip_network(dst, strict=False)
            except ValueError:
                continue
            if net.prefixlen == 0:
                continue
            nets.append(net)
    return nets


def check_ranges(spec: LabSpec, routes: Sequence[Network]) -> None:
    """Refuse lab ranges that overlap a route of the host: the lab must not shadow anything
    the machine really reaches (e.g. 192.0.2.0/24 as an uplink)."""
    for lab_net in spec.networks():
        for route in routes:
            if lab_net.version == route.version and lab_net.overlaps(route):
                raise ConfigError(
                    f"lab range {lab_net} overlaps the host's route to {route}",
                    "choose other ranges in the [lab] section (internet4, lan4, internet6, lan6)",
                )


def existing_namespaces() -> set[str]:
    out = system.run(["ip", "-j", "netns", "list"]).stdout.strip()
    return {entry["name"] for entry in json.loads(out or "[]")}


def _batch(ns: str, lines: Sequence[str]) -> None:
    system.run(["ip", "-n", ns, "-batch", "-"], input="\n".join(lines) + "\n")


def create(spec: LabSpec, lay: Layout) -> None:
    """Namespaces, veths, addresses and routes. The client routes everything to the internet
    namespace; nothing is routed to the host."""
    inet, client, guest = spec.inet_ns, spec.client_ns, spec.guest_ns
    for ns in spec.namespaces:
        system.run(["ip", "netns", "add", ns])
    up4, up6 = lay.uplink4.prefixlen, lay.uplink6.prefixlen
    g4, g6 = lay.guestnet4.prefixlen, lay.guestnet6.prefixlen
    hosts: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [
        lay.web4, lay.web6, lay.dns4, lay.dns6, lay.bridge.v4, lay.bridge.v6]
    for r in lay.relays:
        hosts += [r.v4, r.v6]
    _batch(client, [
        "link set lo up",
        f"link add {UPLINK} type veth peer name {GATEWAY} netns {inet}",
        f"link add {GUEST_LINK} type veth peer name {GUEST_ETH} netns {guest}",
        f"addr add {lay.client4}/{up4} dev {UPLINK}",
        f"addr add {lay.client6}/{up6} dev {UPLINK} nodad",
        f"addr add {lay.guest_gw4}/{g4} dev {GUEST_LINK}",
        f"addr add {lay.guest_gw6}/{g6} dev {GUEST_LINK} nodad",
        f"link set {UPLINK} up",
        f"link set {GUEST_LINK} up",
    ])
    _batch(inet, [
        "link set lo up",
        *(f"addr add {h}/{h.max_prefixlen} dev lo" for h in hosts),
        f"addr add {lay.gateway4}/{up4} dev {GATEWAY}",
        f"addr add {lay.resolver4}/{up4} dev {GATEWAY}",
        f"addr add {lay.gateway6}/{up6} dev {GATEWAY} nodad",
        f"addr add {lay.resolver6}/{up6} dev {GATEWAY} nodad",
        f"link set {GATEWAY} up",
        f"route add {lay.guestnet4} via {lay.client4}",
        f"route add {lay.guestnet6} via {lay.client6}",
        f"route add {lay.ctnet4} via {lay.client4}",
        f"route add {lay.ctnet6} via {lay.client6}",
    ])
    _batch(guest, [
        "link set lo up",
        f"addr add {lay.guest4}/{g4} dev {GUEST_ETH}",
        f"addr add {lay.guest6}/{g6} dev {GUEST_ETH} nodad",
        f"link set {GUEST_ETH} up",
        f"route add default via {lay.guest_gw4}",
        f"route add default via {lay.guest_gw6}",
    ])
    _batch(client, [
        f"route add default via {lay.gateway4}",
        f"route add default via {lay.gateway6}",
    ])
    _containers(spec, lay)
    # The guest is routed through the client: forwarding on in the client's namespace only.
    system.run(ns_argv(client, [
        "sysctl", "-q", "-w", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1",
    ]))
    write_etc_netns(spec, lay)


def _containers(spec: LabSpec, lay: Layout) -> None:
    """The client's docker0: a bridge holding its address in the containers' subnet, one veth
    port per container namespace; the containers route everything via that address."""
    if not lay.containers:
        return
    c4, c6 = lay.ctnet4.prefixlen, lay.ctnet6.prefixlen
    lines = [
        f"link add {CT_BRIDGE} type bridge",
        f"addr add {lay.ct_gw4}/{c4} dev {CT_BRIDGE}",
        f"addr add {lay.ct_gw6}/{c6} dev {CT_BRIDGE} nodad",
        f"link set {CT_BRIDGE} up",
    ]
    for i, ct in enumerate(lay.containers, start=1):
        lines += [
            f"link add {ct_port(i)} type veth peer name {CT_ETH} netns {ct.ns}",
            f"link set {ct_port(i)} master {CT_BRIDGE}",
            f"link set {ct_port(i)} up",
        ]
    _batch(spec.client_ns, lines)
    for ct in lay.containers:
        _batch(ct.ns, [
            "link set lo up",
            f"addr add {ct.v4}/{c4} dev {CT_ETH}",
            f"addr add {ct.v6}/{c6} dev {CT_ETH} nodad",
            f"link set {CT_ETH} up",
            f"route add default via {lay.ct_gw4}",
            f"route add default via {lay.ct_gw6}",
        ])


def write_etc_netns(spec: LabSpec, lay: Layout) -> None:
    """`ip netns exec` bind-mounts /etc/netns/<ns>/resolv.conf over /etc/resolv.conf: the
    client, guest and containers use the LAN resolver (as DHCP would set), the internet
    namespace its DNS."""
    lan = f"nameserver {lay.resolver4}\nnameserver {lay.resolver6}\n"
    conf = {spec.inet_ns: f"nameserver {lay.dns4}\nnameserver {lay.dns6}\n"}
    conf |= {ns: lan for ns in (spec.client_ns, spec.guest_ns, *spec.container_ns)}
    for ns, text in conf.items():
        d = ETC_NETNS / ns
        d.mkdir(parents=True, exist_ok=True)
        (d / "resolv.conf").write_text(f"# netspectre lab ({ns}); removed by `lab down`\n{text}")


def delete(spec: LabSpec) -> list[Error]:
    """Delete the lab's namespaces (their veths go with them) and /etc/netns files. Idempotent;
    returns the failures instead of stopping at the first."""
    failures: list[Error] = []
    try:
        present = existing_namespaces()
    except Error as exc:
        failures.append(exc)
        present = set(spec.namespaces)
    for ns in spec.namespaces:
        if ns in present:
            try:
                system.run(["ip", "netns", "delete", ns])
            except CommandFailed as exc:
                failures.append(exc)
        d = ETC_NETNS / ns
        if d.exists():
            try:
                shutil.rmtree(d)
            except OSError as exc:
                failures.append(Error(f"cannot remove {d}: {exc}"))
    try:
        ETC_NETNS.rmdir()  # only if we left it empty; other software's files keep it
    except OSError:
        pass
    return failures
