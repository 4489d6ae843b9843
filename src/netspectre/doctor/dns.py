"""Judges for the DNS setup: /etc/resolv.conf and systemd-resolved, against what our rules do.

While netspectre is active (backends/nft.py, iptables.py): every IPv4 UDP query to port 53,
loopback included, is redirected to Tor's DNSPort; TCP 53 to the LAN is refused; TCP to other
addresses (a loopback resolver aside) goes to the TransPort; IPv6 is refused except to ::1. Pure.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

from netspectre.findings import Finding

STUB = ("127.0.0.53", "127.0.0.54")  # systemd-resolved's stub listeners


@dataclass(frozen=True)
class ResolvConf:
    path: str
    exists: bool  # the path exists (a dangling symlink does not)
    symlink: str | None = None  # its target, when it is a symlink
    text: str = ""
    error: str = ""  # could not read it


@dataclass(frozen=True)
class Resolved:
    running: bool
    settings: dict[str, tuple[str, str]] = field(default_factory=dict)  # key → (value, file)


def parse(text: str) -> tuple[list[str], list[str]]:
    """resolv.conf text → (nameservers, options)."""
    servers: list[str] = []
    options: list[str] = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(words) >= 2 and words[0] == "nameserver":
            servers.append(words[1].split("%", 1)[0])
        elif words[:1] == ["options"]:
            options += words[1:]
    return servers, options


def _in(address: str, networks: Sequence[str]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    for text in networks:
        network = ipaddress.ip_network(text)
        if network.version == ip.version and ip in network:
            return True
    return False


def _restore_fix(symlink: str | None) -> str:
    if symlink and "systemd/resolve" in symlink:
        return "sudo systemctl restart systemd-resolved (it writes that file)"
    if symlink and "NetworkManager" in symlink:
        return "sudo systemctl restart NetworkManager (it writes that file)"
    return ("let your network manager rewrite it (sudo systemctl restart NetworkManager), or "
            "write one: echo 'nameserver <your resolver>' | sudo tee /etc/resolv.conf")


def resolv_conf(rc: ResolvConf, *, lan: Sequence[str], active: bool) -> Finding:
    check = f"DNS config ({rc.path})"
    after = ("while netspectre is active names still resolve (our rules send glibc's fallback, "
             "127.0.0.1:53, to Tor's DNSPort), but after `stop` nothing resolves")
    if not rc.exists:
        if rc.symlink is not None:
            return Finding(check, False,
                           f"{rc.path} is a symlink to {rc.symlink}, which does not exist: "
                           + after, _restore_fix(rc.symlink))
        return Finding(check, False, f"{rc.path} is missing: " + after, _restore_fix(None))
    if rc.error:
        return Finding(check, False, f"cannot read {rc.path}: {rc.error}",
                       f"sudo chmod 644 {rc.path}")
    servers, options = parse(rc.text)
    if not servers:
        empty = "is empty" if not rc.text.strip() else "has no nameserver line"
        return Finding(check, False, f"{rc.path} {empty}: " + after, _restore_fix(rc.symlink))
    v4 = [s for s in servers if ":" not in s]
    v6 = [s for s in servers if ":" in s and s != "::1"]
    if not v4 and v6 and "::1" not in servers:
        return Finding(
            check, False,
            "only IPv6 nameservers (" + ", ".join(v6) + "): netspectre refuses IPv6 (except "
            "::1) and sends only IPv4 DNS to Tor, so every lookup fails while it is active",
            f"add `nameserver <an IPv4 resolver>` before them in {rc.path} (while netspectre "
            "is active any IPv4 address works: its queries go to Tor's DNSPort)")
    lan_servers = [s for s in v4 if _in(s, lan)]
    if lan_servers and "use-vc" in options:
        return Finding(
            check, False,
            f"{rc.path} forces DNS over TCP (options use-vc) to the LAN resolver "
            + ", ".join(lan_servers) + ": netspectre refuses TCP 53 to the LAN (it would "
            "bypass Tor), so every lookup fails while it is active",
            f"remove use-vc from the options line: sudo sed -i 's/ use-vc//' {rc.path}")
    detail = "nameservers " + ", ".join(servers)
    if lan_servers:
        detail += (f"; {', '.join(lan_servers)} is in firewall.lan: its UDP queries go to Tor's "
                   "DNSPort while active, TCP to it is refused (a truncated answer cannot be "
                   "retried over TCP)")
    elif v4:
        detail += "; IPv4 UDP queries go to Tor's DNSPort while netspectre is active"
    return Finding(check, True, detail)


def resolved(rc: ResolvConf, facts: Resolved) -> Finding:
    check = "systemd-resolved"
    servers, _ = parse(rc.text) if rc.exists and not rc.error else ([], [])
    stub = any(s in STUB for s in servers)
    if not stub and not facts.running:
        return Finding(check, True, "not in use")
    if stub and not facts.running:
        return Finding(
            check, False,
            f"{rc.path} points at systemd-resolved's stub "
            f"({', '.join(s for s in servers if s in STUB)}) but systemd-resolved is not "
            "running: while netspectre is active UDP lookups still work (our rules send "
            "every UDP query to port 53, loopback included, to Tor's DNSPort), TCP lookups "
            "fail, and after `stop` nothing resolves",
            "sudo systemctl start systemd-resolved, or point /etc/resolv.conf at a plain "
            "resolver (nameserver <address>)")
    dnssec, dnssec_file = facts.settings.get("DNSSEC", ("", ""))
    dot, dot_file = facts.settings.get("DNSOverTLS", ("", ""))
    restart = "sudo systemctl restart systemd-resolved"
    if dnssec.lower() in ("yes", "true", "1"):
        return Finding(
            check, False,
            f"systemd-resolved validates DNSSEC strictly (DNSSEC={dnssec} in {dnssec_file}); "
            "Tor's DNSPort answers only A, AAAA and PTR queries (no DNSSEC records), so "
            "resolved rejects every answer: no name resolves while netspectre is active",
            f"sudo sed -i 's/^DNSSEC=.*/DNSSEC=no/' {dnssec_file} && {restart} "
            "(or for now: sudo resolvectl dnssec <link> no)")
    if dot.lower() in ("yes", "true", "1", "opportunistic"):
        return Finding(
            check, False,
            f"systemd-resolved uses DNS-over-TLS (DNSOverTLS={dot} in {dot_file}): to our "
            "rules that is plain TCP to port 853, so to a resolver in firewall.lan it goes out "
            "directly, bypassing Tor's DNSPort (the LAN is exempt), and to any other resolver "
            "it leaves through a Tor exit",
            f"sudo sed -i 's/^DNSOverTLS=.*/DNSOverTLS=no/' {dot_file} && {restart} "
            "(or for now: sudo resolvectl dnsovertls <link> no)")
    how = ("programs ask it at 127.0.0.53, but while netspectre is active our rules send "
           "those UDP queries straight to Tor's DNSPort" if stub
           else "programs using nss-resolve ask it")
    return Finding(check, True, f"running: {how}; its own upstream queries (UDP 53) are "
                   "redirected to Tor too")
