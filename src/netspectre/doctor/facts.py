"""The gathering layer: read the real system (PATH, /proc, /etc/resolv.conf, Tor's control port,
the state file, nft/iptables listings) into the judges' facts. Reads only; changes nothing."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from netspectre import backends, state, system
from netspectre.backends import Backend, iptables
from netspectre.backends.iptables_shell import IptablesFirewall
from netspectre.config import Config, TorMode
from netspectre.doctor.dns import ResolvConf, Resolved
from netspectre.doctor.findings import PACKAGE_MANAGERS
from netspectre.doctor.leftovers import StateFacts
from netspectre.doctor.network import FirewallFacts, PortFact, count_rules
from netspectre.doctor.tor import TorFacts
from netspectre.errors import Error, MissingTool, StateError
from netspectre.paths import Paths
from netspectre.sysctl import IPV6_CONF, PROC
from netspectre.tor.layout import Files

# Anything a broken system can make these reads raise: the doctor reports it, never crashes.
TROUBLE = (Error, OSError, ValueError, subprocess.SubprocessError)


def managers() -> tuple[str, ...]:
    return tuple(name for name, _ in PACKAGE_MANAGERS if system.which(name))


# -- tor --------------------------------------------------------------------------------------


def tor(config: Config, paths: Paths) -> TorFacts:
    from netspectre.tor import process, systemtor
    from netspectre.tor.bootstrap import complaint
    from netspectre.tor.connect import controller
    from netspectre.tor.protocol import parse_bootstrap
    from netspectre.tor.record import Endpoints

    files = Files.of(paths)
    binary, found = system.which("tor"), managers()
    root = os.geteuid() == 0
    managed = config.tor.mode is TorMode.MANAGED
    ours = process.ours(files) if managed else {}
    running = "tor" in ours
    lacking: tuple[str, ...] = ()
    bootstrap = None
    error = ""
    reachable = False
    if running or not managed:
        try:
            with controller(Endpoints.of(config), paths, timeout=2.0) as ctl:
                phase = ctl.getinfo("status/bootstrap-phase").get("status/bootstrap-phase", "")
                bootstrap = parse_bootstrap(phase)
                if not managed:
                    listeners = ctl.getinfo("net/listeners/trans", "net/listeners/dns")
                    conf = ctl.getconf("VirtualAddrNetworkIPv4", "AutomapHostsOnResolve")
                    lacking = tuple(systemtor.missing(config, listeners, conf))
            reachable = True
        except Error as exc:
            error = exc.message
    return TorFacts(
        binary=binary, managers=found, running=running if managed else reachable,
        pid=ours.get("tor"), supervisor="supervisor" in ours, reachable=reachable,
        error=error, bootstrap=bootstrap, lacking=lacking,
        complaint=complaint(files) if managed else "",
        log=str(files.notice_log) if managed else "", root=root)


def notice_log(paths: Paths) -> list[str] | None:
    try:
        return Files.of(paths).notice_log.read_text(errors="replace").splitlines()[-2000:]
    except OSError:
        return None


# -- ports ------------------------------------------------------------------------------------


def _free(start: int, udp: bool, taken: set[int]) -> int | None:
    from netspectre.tor.process import port_in_use

    for candidate in range(start + 1, min(start + 50, 65536)):
        if candidate not in taken and not port_in_use(candidate, udp=udp):
            return candidate
    return None


def ports(config: Config, paths: Paths) -> list[PortFact]:
    from netspectre.tor import process
    from netspectre.tor.process import port_in_use

    files = Files.of(paths)
    ours = set(process.ours(files).values()) if config.tor.mode is TorMode.MANAGED else set()
    wanted = [("tor.trans_port", config.tor.trans_port, False),
              ("tor.dns_port", config.tor.dns_port, True)]
    if config.tor.mode is TorMode.MANAGED:
        wanted.append(("tor.socks_port", config.tor.socks_port, False))
    taken = {p for _, p, _ in wanted}
    out = []
    for key, port, udp in wanted:
        if not port_in_use(port, udp=udp):
            out.append(PortFact(key, port, udp, in_use=False))
            continue
        pids = process.port_owners(port, udp=udp)
        out.append(PortFact(
            key, port, udp, in_use=True,
            owners=tuple((pid, process.describe(pid)) for pid in pids),
            ours=bool(pids) and set(pids) <= ours,
            alternative=_free(port, udp, taken)))
    return out


# -- firewall ---------------------------------------------------------------------------------


def _save(tools: tuple[str, ...]) -> int | None:
    """Foreign rules in one iptables flavour (v4 + v6), or None when its tools are missing."""
    total: int | None = None
    for tool in tools:
        if system.which(tool) is None:
            continue
        try:
            out = system.run([tool], check=False, timeout=10).stdout
        except TROUBLE:
            continue
        total = (total or 0) + count_rules(out)
    return total


def _foreign(variant: Backend) -> int | None:
    """Foreign rules in one iptables flavour: 0 without any table (saving would only load the
    kernel's modules to print nothing), None when its tools are missing."""
    tools = tuple(iptables.save_argv(variant, family)[0] for family in (4, 6))
    if not IptablesFirewall(variant).tables_exist():
        return 0 if system.which(tools[0]) else None
    return _save(tools)


def firewall_facts(config: Config) -> FirewallFacts:
    root = os.geteuid() == 0
    backend: str | None = None
    missing = ""
    try:
        chosen, evidence = backends.detect(config.firewall.backend)
        backend = chosen.backend.value
    except MissingTool as exc:
        evidence = exc.message
        missing = exc.message.split("`")[1] if "`" in exc.message else ""
    except TROUBLE as exc:
        evidence = str(getattr(exc, "message", exc))
    flavour: str | None = None
    if system.which("iptables"):
        try:
            flavour = ("nf_tables" if backends.variant() is Backend.IPTABLES_NFT
                       else "legacy")
        except TROUBLE:
            pass
    legacy = nft = None
    if root:
        legacy = _foreign(Backend.IPTABLES_LEGACY)
        nft = _foreign(Backend.IPTABLES_NFT)
    return FirewallFacts(backend=backend, evidence=evidence, missing=missing,
                         managers=managers(), system_iptables=flavour,
                         legacy_rules=legacy, nft_rules=nft)


# -- DNS --------------------------------------------------------------------------------------


def resolv_conf(path: Path = Path("/etc/resolv.conf")) -> ResolvConf:
    symlink = os.readlink(path) if path.is_symlink() else None
    if not path.exists():
        return ResolvConf(str(path), exists=False, symlink=symlink)
    try:
        return ResolvConf(str(path), exists=True, symlink=symlink,
                          text=path.read_text(errors="replace"))
    except OSError as exc:
        return ResolvConf(str(path), exists=True, symlink=symlink,
                          error=exc.strerror or str(exc))


RESOLVED_CONF = (Path("/etc/systemd/resolved.conf"), Path("/etc/systemd/resolved.conf.d"),
                 Path("/run/systemd/resolved.conf.d"))


def resolved(proc: Path = Path("/proc"), conf: tuple[Path, ...] = RESOLVED_CONF) -> Resolved:
    running = False
    for entry in proc.iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "systemd-resolve":
                    running = True
                    break
            except OSError:
                continue
    files: list[Path] = []
    for path in conf:
        if path.is_dir():
            files += sorted(path.glob("*.conf"))
        elif path.is_file():
            files.append(path)
    settings: dict[str, tuple[str, str]] = {}
    for path in files:  # later files win, as in resolved.conf(5)
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            key, eq, value = line.strip().partition("=")
            if eq and key.strip() in ("DNSSEC", "DNSOverTLS"):
                settings[key.strip()] = (value.strip(), str(path))
    return Resolved(running=running, settings=settings)


# -- state ------------------------------------------------------------------------------------


def _rules_in_force() -> tuple[str, ...]:
    found = []
    for firewall in backends.everywhere():
        try:
            if firewall.may_hold_ours() and firewall.present():
                found.append(firewall.backend.value)
        except TROUBLE:
            continue
    return tuple(found)


def state_facts(paths: Paths) -> StateFacts:
    values: dict[str, str] | None = {}
    try:
        values = {name: (PROC / IPV6_CONF / name / "disable_ipv6").read_text().strip()
                  for name in ("all", "default")}
    except OSError:  # IPv6 compiled out or disabled at boot
        values = None
    root = os.geteuid() == 0
    if not root:
        return StateFacts(root=False, ipv6=values, boot_id=state.boot_id(), now=time.time())
    recorded, error = None, ""
    try:
        recorded = state.load(paths.state)
    except StateError as exc:
        error = exc.message
    except OSError as exc:
        error = f"{paths.state}: {exc.strerror}"
    marker, marker_error = None, ""
    try:
        marker = state.load_lockdown(paths.lockdown)
    except StateError as exc:
        marker_error = exc.message
    return StateFacts(root=True, state=recorded, error=error, boot_id=state.boot_id(),
                      rules=_rules_in_force(), lockdown=marker, lockdown_error=marker_error,
                      ipv6=values, now=time.time())
