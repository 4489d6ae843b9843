"""A small pcap reader (Ethernet, IPv4/IPv6, TCP/UDP ports and flags): enough to judge a
capture of the lab client's uplink without scapy. Pure.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

ETH_IPV4, ETH_IPV6, ETH_ARP = 0x0800, 0x86DD, 0x0806
TCP, UDP, ICMP, ICMPV6 = 6, 17, 1, 58
FIN, SYN, RST, PSH, ACK, URG = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
_V6_EXT = {0, 43, 60}  # hop-by-hop, routing, destination options: skipped to the payload


@dataclass(frozen=True)
class Packet:
    ts: float
    src_mac: str
    dst_mac: str
    ethertype: int
    version: int | None = None  # 4, 6 or None (ARP, …)
    src: str | None = None
    dst: str | None = None
    proto: int | None = None
    sport: int | None = None
    dport: int | None = None
    tcp_flags: int | None = None
    payload: bytes = b""
    length: int = 0  # on the wire (the capture may hold fewer bytes)

    @property
    def is_ip(self) -> bool:
        return self.version is not None

    def in_net(self, net: str) -> bool:
        if self.dst is None:
            return False
        addr = ipaddress.ip_address(self.dst)
        network = ipaddress.ip_network(net)
        return addr.version == network.version and addr in network

    def __str__(self) -> str:
        ports = f" {self.sport}->{self.dport}" if self.sport is not None else ""
        flags = f" flags={self.tcp_flags:#04x}" if self.tcp_flags is not None else ""
        return (f"{self.ts:.6f} {self.src_mac} IPv{self.version} {self.src} > {self.dst} "
                f"proto={self.proto}{ports}{flags} len={len(self.payload)}")


def _mac(b: bytes) -> str:
    return ":".join(f"{x:02x}" for x in b)


def _l4(proto: int, data: bytes) -> tuple[int | None, int | None, int | None, bytes]:
    if proto == TCP and len(data) >= 20:
        sport, dport = struct.unpack("!HH", data[:4])
        offset = (data[12] >> 4) * 4
        return sport, dport, data[13] & 0x3F, data[offset:]
    if proto == UDP and len(data) >= 8:
        sport, dport = struct.unpack("!HH", data[:4])
        return sport, dport, None, data[8:]
    return None, None, None, data


def parse_frame(ts: float, frame: bytes, length: int | None = None) -> Packet:
    wire = len(frame) if length is None else length
    dst_mac, src_mac = _mac(frame[0:6]), _mac(frame[6:12])
    ethertype = struct.unpack("!H", frame[12:14])[0]
    body = frame[14:]
    if ethertype == ETH_IPV4 and len(body) >= 20:
        ihl = (body[0] & 0x0F) * 4
        proto = body[9]
        src = str(ipaddress.IPv4Address(body[12:16]))
        dst = str(ipaddress.IPv4Address(body[16:20]))
        sport, dport, flags, payload = _l4(proto, body[ihl:])
        return Packet(ts, src_mac, dst_mac, ethertype, 4, src, dst, proto, sport, dport, flags,
                      payload, wire)
    if ethertype == ETH_IPV6 and len(body) >= 40:
        proto = body[6]
        src = str(ipaddress.IPv6Address(body[8:24]))
        dst = str(ipaddress.IPv6Address(body[24:40]))
        rest = body[40:]
        while proto in _V6_EXT and len(rest) >= 8:
            proto, length = rest[0], (rest[1] + 1) * 8
            rest = rest[length:]
        sport, dport, flags, payload = _l4(proto, rest)
        return Packet(ts, src_mac, dst_mac, ethertype, 6, src, dst, proto, sport, dport, flags,
                      payload, wire)
    return Packet(ts, src_mac, dst_mac, ethertype, payload=body, length=wire)


def read_pcap(data: bytes) -> list[Packet]:
    """Ethernet pcap (µs or ns timestamps, either byte order) → packets; a torn tail is ignored."""
    if len(data) < 24:
        return []
    magic = data[:4]
    table = {
        b"\xd4\xc3\xb2\xa1": ("<", 1e-6), b"\xa1\xb2\xc3\xd4": (">", 1e-6),
        b"\x4d\x3c\xb2\xa1": ("<", 1e-9), b"\xa1\xb2\x3c\x4d": (">", 1e-9),
    }
    if magic not in table:
        raise ValueError(f"not a pcap file (magic {magic.hex()})")
    endian, scale = table[magic]
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    if linktype != 1:
        raise ValueError(f"unsupported link type {linktype} (want Ethernet)")
    packets = []
    pos = 24
    record = struct.Struct(endian + "IIII")
    while pos + 16 <= len(data):
        sec, frac, caplen, wirelen = record.unpack_from(data, pos)
        pos += 16
        if pos + caplen > len(data):
            break
        packets.append(parse_frame(sec + frac * scale, data[pos:pos + caplen], wirelen))
        pos += caplen
    return packets
