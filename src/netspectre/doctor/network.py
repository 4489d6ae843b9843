"""Judges for Tor's ports (taken, and by whom) and the firewall tools and rule sets. Pure."""

from __future__ import annotations

from dataclasses import dataclass

from netspectre.backends import iptables
from netspectre.config import DEFAULT_PATH, BackendName, Config, TorMode
from netspectre.doctor.findings import install, needs_root
from netspectre.findings import Finding


@dataclass(frozen=True)
class PortFact:
    key: str  # "tor.trans_port"
    port: int
    udp: bool
    in_use: bool  # binding 127.0.0.1:port would fail
    owners: tuple[tuple[int, str], ...] = ()  # (pid, "comm (pid N, uid U)"); root sees all
    ours: bool = False  # every owner is netspectre's own tor
    alternative: int | None = None  # a free port to suggest


_ROLE = {"tor.trans_port": "TransPort", "tor.dns_port": "DNSPort", "tor.socks_port": "SocksPort"}


def port(config: Config, fact: PortFact, *, root: bool) -> Finding:
    proto = "udp" if fact.udp else "tcp"
    where = f"127.0.0.1:{fact.port}/{proto}"
    role = _ROLE.get(fact.key, fact.key)
    check = f"port {fact.port}/{proto} ({fact.key})"
    system = config.tor.mode is TorMode.SYSTEM
    if not fact.in_use:
        if system:
            return Finding(check, False,
                           f"nothing listens on {where}: the system tor offers no {role} there",
                           f"add `{role} 127.0.0.1:{fact.port}` to /etc/tor/torrc, then "
                           "sudo systemctl restart tor")
        return Finding(check, True, f"{where} is free for Tor's {role}")
    names = ", ".join(desc for _, desc in fact.owners)
    if fact.ours:
        return Finding(check, True, f"{where} is held by netspectre's tor ({names})")
    if system and fact.owners and all(desc.startswith("tor ") for _, desc in fact.owners):
        return Finding(check, True, f"{where} is held by the system tor ({names})")
    other = f"{fact.alternative}" if fact.alternative else "another free port"
    change = (f"set `{fact.key.split('.')[1]} = {other}` under [tor] in "
              f"{config.path or DEFAULT_PATH}")
    if not fact.owners:
        if not root:
            return Finding(check, False,
                           f"{where} ({role}) is taken by a process only root can name",
                           f"{'sudo netspectre doctor'} (names it), or {change}")
        return Finding(check, False, f"{where} ({role}) is taken by a process we cannot find",
                       f"sudo ss -lpn 'sport = :{fact.port}', or {change}")
    pids = " ".join(str(pid) for pid, _ in fact.owners)
    return Finding(
        check, False,
        f"{where} is taken by {names}: Tor's {role} cannot bind it"
        + (", so netspectre's tor cannot start" if not system else ""),
        f"sudo kill {pids}, or {change}")


# -- firewall tools ---------------------------------------------------------------------------

_TOOL_PACKAGE = {"nft": "nftables"}


@dataclass(frozen=True)
class FirewallFacts:
    backend: str | None  # what `netspectre start` would use (backends.detect)
    evidence: str  # why, or why none (detect's error)
    missing: str = ""  # the tool detect found missing
    managers: tuple[str, ...] = ()
    system_iptables: str | None = None  # "nf_tables" | "legacy" (`iptables --version`)
    legacy_rules: int | None = None  # other software's rules in iptables-legacy (None: unknown)
    nft_rules: int | None = None  # … in iptables-nft (the ip/ip6 filter/nat/… tables)


def tools(config: Config, facts: FirewallFacts) -> Finding:
    check = f"firewall tools (backend = {config.firewall.backend.value})"
    if facts.backend is not None:
        return Finding(check, True, f"netspectre would use {facts.backend}: {facts.evidence}")
    wanted = config.firewall.backend
    package = "nftables" if wanted in (BackendName.NFT, BackendName.AUTO) else "iptables"
    fix = install(_TOOL_PACKAGE.get(facts.missing, package), facts.managers)
    if wanted is not BackendName.AUTO:
        fix += (f", or set `backend = \"auto\"` under [firewall] in "
                f"{config.path or DEFAULT_PATH}")
    return Finding(check, False, f"netspectre cannot apply its rules: {facts.evidence}", fix)


def count_rules(save_output: str) -> int:
    """Rules (and non-ACCEPT chain policies) in iptables-save text that are not netspectre's."""
    count = 0
    for line in save_output.splitlines():
        if iptables.ours_line(line):
            continue
        if line.startswith("-A "):
            count += 1
        elif line.startswith(":") and len(line.split()) > 1 and line.split()[1] not in (
                "ACCEPT", "-"):
            count += 1
    return count


def flavours(facts: FirewallFacts, *, root: bool) -> Finding:
    check = "iptables flavours"
    legacy, nft = facts.legacy_rules, facts.nft_rules
    if legacy is None and nft is None:
        if not root:
            return needs_root(check, "iptables rule sets are readable only by root")
        return Finding(check, None, "no iptables tools installed")
    legacy, nft = legacy or 0, nft or 0
    system = facts.system_iptables
    ours = f"netspectre itself would use {facts.backend}" if facts.backend else ""
    if legacy and nft:
        shown = "nf_tables" if system == "nf_tables" else "legacy"
        return Finding(
            check, False,
            f"two iptables rule sets coexist: {legacy} rule(s) in iptables-legacy and {nft} in "
            f"iptables-nft; the kernel enforces both, but `iptables` shows only the {shown} one"
            + (f"; {ours}" if ours else ""),
            "see both: sudo iptables-legacy-save; sudo iptables-nft-save — keep one: "
            "sudo update-alternatives --set iptables /usr/sbin/iptables-nft (and move or "
            "remove the legacy rules), or pin netspectre with [firewall] backend")
    hidden = (legacy, "legacy", "nft") if system == "nf_tables" else (nft, "nft", "legacy")
    if hidden[0]:
        return Finding(
            check, False,
            f"{hidden[0]} rule(s) sit in iptables-{hidden[1]}, but `iptables` is "
            f"iptables-{hidden[2]} and does not show them; they still filter every packet "
            "(a common reason for \"no internet\" that `iptables -L` cannot explain)"
            + (f"; {ours}" if ours else ""),
            f"see them: sudo iptables-{hidden[1]}-save; manage them with `iptables`: sudo "
            f"update-alternatives --set iptables /usr/sbin/iptables-{hidden[1]}")
    shown = {"nf_tables": "nf_tables", "legacy": "legacy"}.get(system or "", "unknown")
    return Finding(check, True, f"one iptables rule set ({shown}); "
                   f"{legacy + nft} foreign rule(s)")

