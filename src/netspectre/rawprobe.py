"""verify's AF_PACKET probe (the raw-socket guard, #12): an Ethernet frame carrying a UDP
datagram to the verify target, sent on the uplink with and without PACKET_QDISC_BYPASS."""

from __future__ import annotations

import errno
import socket
import struct
import time
from collections.abc import Callable

from netspectre import wire
from netspectre.findings import Finding
from netspectre.probes import (
    LEAK,
    REFUSED,
    Counters,
    Observation,
    counted,
    elapsed_since,
    read_safely,
)

ETH_P_IP = 0x0800
SOL_PACKET, PACKET_QDISC_BYPASS = 263, 20
SO_MARK = 36
RAW_PORT = 443
RAW_REFUSALS = {errno.ENOBUFS, errno.EPERM}
RAW_TAG = b"netspectre raw probe"


def uplink(route: str = "/proc/net/route") -> str | None:
    """The interface of the IPv4 default route (where a raw leak would go)."""
    try:
        lines = open(route, encoding="ascii").read().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) > 2 and fields[1] == "00000000":
            return fields[0]
    return None


def raw_frame(src_mac: bytes, target4: str, *, sport: int = 40000,
              dport: int = RAW_PORT) -> bytes:
    """An Ethernet broadcast frame carrying an IPv4/UDP datagram to target4. Pure."""
    payload = RAW_TAG
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0,
                         bytes(4), socket.inet_aton(target4))
    header = header[:10] + struct.pack("!H", wire.checksum(header)) + header[12:]
    return b"\xff" * 6 + src_mac + struct.pack("!H", ETH_P_IP) + header + udp


def fire_raw(ifname: str, target4: str, *, bypass: bool, mark: int = 0) -> Observation:
    """Send one frame from an AF_PACKET socket on ifname (root); the error at send, if any."""
    start = time.monotonic()
    try:
        mac = bytes.fromhex(open(f"/sys/class/net/{ifname}/address").read().strip()
                            .replace(":", ""))
    except (OSError, ValueError):
        mac = bytes(6)
    frame = raw_frame(mac.ljust(6, b"\0")[:6], target4)
    try:
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0) as s:
            if bypass:
                s.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
            if mark:
                s.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
            s.bind((ifname, 0))
            s.send(frame)
    except OSError as exc:
        return Observation(error=exc.errno, at_send=True, elapsed=elapsed_since(start))
    return Observation(elapsed=elapsed_since(start))


def judge_raw(seen: Observation, moved: dict[str, int] | None) -> tuple[bool, str]:
    """Refused: ENOBUFS/EPERM at send, or `blocked_raw` moved; anything else is a leak. Pure."""
    if seen.error in RAW_REFUSALS and seen.at_send:
        return True, f"{errno.errorcode[seen.error]} at send: dropped at the interface's egress"
    if moved and moved.get("blocked_raw"):
        return True, f"dropped by the raw guard (blocked_raw +{moved['blocked_raw']})"
    if seen.error is not None:
        return False, (f"{errno.errorcode.get(seen.error, seen.error)} at send, but the guard "
                       "did not count it")
    return False, ("sent, and the raw guard did not drop it: the frame left" if moved is not None
                   else "sent, and no counter could be read")


def run_raw(ifname: str, target4: str, read_counters: Callable[[], Counters],
            *, mark: int = 0) -> list[Finding]:
    """The AF_PACKET probe on ifname, without and with PACKET_QDISC_BYPASS."""
    rows = []
    for bypass in (False, True):
        before = read_safely(read_counters)
        seen = fire_raw(ifname, target4, bypass=bypass, mark=mark)
        after = read_safely(read_counters)
        moved = None if before is None or after is None else counted(before, after)
        ok, evidence = judge_raw(seen, moved)
        name = f"raw AF_PACKET frame on {ifname} to {target4}" + (
            " (PACKET_QDISC_BYPASS)" if bypass else "")
        rows.append(Finding(name, ok, ("refused: " if ok else "leak: ") + evidence,
                            "" if ok else "run `sudo netspectre restart` (it re-applies the "
                            "raw guard), then verify again",
                            extra={"expected": REFUSED, "outcome": REFUSED if ok else LEAK}))
    return rows
