"""`netspectre doctor`: what is wrong, in plain words, each with the command that fixes it.

facts.py reads the system (and changes nothing); tor/network/dns/leftovers judge those facts
(pure, fed by the unit tests). diagnose() never raises for a broken system: that is the report.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from netspectre import system
from netspectre.config import Config, TorMode
from netspectre.findings import Checks, Finding
from netspectre.paths import Paths
from netspectre.tor.layout import Files


def _guard(check: str, judge: Callable[[], list[Finding]]) -> list[Finding]:
    from netspectre.doctor.facts import TROUBLE

    try:
        return judge()
    except TROUBLE as exc:
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        return [Finding(check, False, f"doctor could not check this: {message}",
                        "sudo netspectre --debug doctor")]


def _config(config_path: str | None) -> tuple[Config, Finding]:
    from netspectre.config import DEFAULT_PATH, load
    from netspectre.errors import ConfigError

    try:
        config = load(config_path)
    except ConfigError as exc:
        return Config(), Finding(
            "config", False, f"{exc.message} (the checks below use the defaults)",
            exc.hint or f"fix {config_path or DEFAULT_PATH}")
    where = config.path or f"{DEFAULT_PATH} absent: defaults"
    return config, Finding("config", True, f"{where}; tor.mode = {config.tor.mode.value}")


def diagnose(config_path: str | None, paths: Paths) -> Checks:
    from netspectre.doctor import dns, facts, leftovers, network, runcheck, tor

    config, loaded = _config(config_path)
    root = os.geteuid() == 0
    checks: list[Finding] = [loaded]
    if not root:
        checks.append(Finding("root", None, "not root: checks that need root are skipped",
                              "sudo netspectre doctor"))
    try:
        seen = facts.state_facts(paths)
    except facts.TROUBLE as exc:
        seen = leftovers.StateFacts(root=root, error=f"cannot read what is in force: {exc}")
    active = leftovers.is_active(seen)
    checks += [leftovers.active(seen), leftovers.state(seen), leftovers.lockdown(seen),
               leftovers.ipv6(seen)]

    def tor_checks() -> list[Finding]:
        found = facts.tor(config, paths)
        out = [tor.installed(config, found), tor.bootstrapped(config, found, active=active)]
        if config.tor.mode is TorMode.MANAGED:
            log = str(Files.of(paths).notice_log)
            out.append(tor.clock(facts.notice_log(paths), log=log, active=active))
        return out

    def port_checks() -> list[Finding]:
        return [network.port(config, fact, root=root) for fact in facts.ports(config, paths)]

    def firewall_checks() -> list[Finding]:
        found = facts.firewall_facts(config)
        return [network.tools(config, found), network.flavours(found, root=root)]

    def dns_checks() -> list[Finding]:
        rc = facts.resolv_conf()
        return [dns.resolv_conf(rc, lan=config.firewall.lan, active=active),
                dns.resolved(rc, facts.resolved())]

    checks += _guard("tor", tor_checks)
    checks += _guard("ports", port_checks)
    checks += _guard("firewall", firewall_checks)
    def raw_guard_checks() -> list[Finding]:
        from netspectre.backends import guardwatch
        from netspectre.doctor import guard

        recorded = leftovers.current(seen)
        if not root or recorded is None or not active:
            return []
        return guard.findings(guardwatch.status(paths, recorded, system.HOST))

    def gateway_checks() -> list[Finding]:
        from netspectre import gatewayinfo

        recorded = leftovers.current(seen)
        if recorded is None or not active:
            return []
        return gatewayinfo.findings(gatewayinfo.status(recorded.policy))

    checks += _guard("DNS", dns_checks)
    checks += _guard("raw guard", raw_guard_checks)
    checks += _guard("gateway", gateway_checks)
    checks += _guard("netspectre run", runcheck.gather)
    return Checks(tuple(checks))
