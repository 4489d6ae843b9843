"""What a refused packet was: IPv4/IPv6 and TCP/UDP/ICMP headers → `Packet`, and a label a
person recognises (QUIC, DNS, STUN…). Pure."""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

TCP, UDP, ICMP, ICMPV6 = 6, 17, 1, 58
PROTOCOLS = {TCP: "TCP", UDP: "UDP", ICMP: "ICMP", ICMPV6: "ICMPv6", 47: "GRE", 50: "ESP",
             132: "SCTP"}
# IPv6 extension headers we step over to reach the transport header.
_EXTENSIONS = {0, 43, 60, 135, 139, 140}
_FRAGMENT, _AH = 44, 51

# (protocol, destination port) → what it usually is; None: either TCP or UDP.
LABELS: dict[tuple[int | None, int], str] = {
    (UDP, 443): "QUIC", (None, 53): "DNS", (UDP, 3478): "STUN", (UDP, 3479): "STUN",
    (None, 5349): "STUN/TLS", (UDP, 19302): "STUN", (UDP, 123): "NTP", (UDP, 67): "DHCP",
    (UDP, 5353): "mDNS", (UDP, 5355): "LLMNR", (UDP, 1900): "SSDP", (TCP, 853): "DoT",
    (UDP, 853): "DoQ", (TCP, 80): "HTTP", (TCP, 443): "HTTPS", (UDP, 51820): "WireGuard",
    (UDP, 1194): "OpenVPN", (TCP, 22): "SSH", (TCP, 25): "SMTP", (UDP, 500): "IKE",
    (UDP, 4500): "IPsec NAT-T", (UDP, 137): "NetBIOS", (UDP, 161): "SNMP",
}
ICMP_LABELS = {(ICMP, 8): "ping", (ICMPV6, 128): "ping"}


@dataclass(frozen=True)
class Packet:
    family: int  # 4 or 6
    proto: int  # IP protocol number (after IPv6 extension headers)
    src: str
    dst: str
    sport: int | None = None  # TCP/UDP ports; ICMP echo: the identifier as sport
    dport: int | None = None
    icmp_type: int | None = None

    @property
    def proto_name(self) -> str:
        return PROTOCOLS.get(self.proto, f"proto {self.proto}")

    @property
    def label(self) -> str:
        """"QUIC", "DNS", "ping"… or "" when the port says nothing."""
        if self.icmp_type is not None:
            return ICMP_LABELS.get((self.proto, self.icmp_type), "")
        if self.dport is None:
            return ""
        return LABELS.get((self.proto, self.dport)) or LABELS.get((None, self.dport), "")


def parse(payload: bytes) -> Packet | None:
    """The packet a log message carries, from its IP header; None when too short/unknown."""
    if not payload:
        return None
    version = payload[0] >> 4
    if version == 4 and len(payload) >= 20:
        ihl = (payload[0] & 0x0F) * 4
        proto = payload[9]
        src = socket.inet_ntop(socket.AF_INET, payload[12:16])
        dst = socket.inet_ntop(socket.AF_INET, payload[16:20])
        fragment_offset = struct.unpack_from("!H", payload, 6)[0] & 0x1FFF
        rest = payload[ihl:] if fragment_offset == 0 else b""
        return _transport(4, proto, src, dst, rest)
    if version == 6 and len(payload) >= 40:
        proto = payload[6]
        src = socket.inet_ntop(socket.AF_INET6, payload[8:24])
        dst = socket.inet_ntop(socket.AF_INET6, payload[24:40])
        offset = 40
        while offset + 8 <= len(payload):
            if proto in _EXTENSIONS:
                length = (payload[offset + 1] + 1) * 8
            elif proto == _AH:
                length = (payload[offset + 1] + 2) * 4
            elif proto == _FRAGMENT:
                if struct.unpack_from("!H", payload, offset + 2)[0] & 0xFFF8:
                    return Packet(6, payload[offset], src, dst)  # a later fragment: no ports
                length = 8
            else:
                break
            proto = payload[offset]
            offset += length
        return _transport(6, proto, src, dst, payload[offset:])
    return None


def _transport(family: int, proto: int, src: str, dst: str, rest: bytes) -> Packet:
    if proto in (TCP, UDP) and len(rest) >= 4:
        sport, dport = struct.unpack_from("!HH", rest)
        return Packet(family, proto, src, dst, sport, dport)
    if proto in (ICMP, ICMPV6) and len(rest) >= 1:
        kind = rest[0]
        echo = (ICMP, 8) if proto == ICMP else (ICMPV6, 128)
        ident = struct.unpack_from("!H", rest, 4)[0] if (proto, kind) == echo and len(rest) >= 6 \
            else None
        return Packet(family, proto, src, dst, sport=ident, icmp_type=kind)
    return Packet(family, proto, src, dst)
