"""status, verify, rules, newnym, myip: read what is in force, change nothing."""

from __future__ import annotations

import difflib
from dataclasses import asdict

from netspectre import backends, gatewayinfo, probes, rawprobe, state, sysctl
from netspectre.backends import Firewall
from netspectre.commands import Context, require_root
from netspectre.commands.lifecycle import plan_for
from netspectre.errors import Error, StateError
from netspectre.findings import Checks, Finding
from netspectre.paths import Paths
from netspectre.plan import Plan
from netspectre.policy import Policy
from netspectre.state import Phase, State
from netspectre.status import ExitReport, IdleStatus, Lockdown, NewnymReport, Status
from netspectre.tor import running
from netspectre.tor.record import Endpoints

IPV6_ALL = f"{sysctl.IPV6_CONF}/all/disable_ipv6"
RESTART = "sudo netspectre restart"


def endpoints(ctx: Context, current: State | None) -> Endpoints:
    """Where the Tor in force listens: as recorded; the config's only when nothing is."""
    if current is not None and current.tor is not None:
        return current.tor.endpoints
    return Endpoints.of(ctx.config)


def status(ctx: Context) -> Status | IdleStatus:
    require_root("status")
    p = ctx.paths
    current = state.load_current(p.state)
    if current is None:
        leftovers = tuple(f.backend.value for f in backends.everywhere(runner=ctx.runner)
                          if _safe_present(f))
        return IdleStatus(leftover_rules=leftovers, lockdown=lockdown(p),
                          tor=running.status(endpoints(ctx, None), p, None))
    firewall = backends.open(current.backend, ctx.runner) if current.firewall else None
    in_force = firewall is not None and firewall.present()
    return Status(
        # Tor only (--no-firewall): active means our tor runs; `torified` stays false.
        active=current.phase is Phase.ACTIVE and (in_force or not current.firewall),
        phase=current.phase.value,
        backend=current.backend.value if current.firewall else "none",
        since=current.since,
        ruleset_in_force=in_force,
        policy=current.policy,
        counters=firewall.counters() if firewall is not None and in_force else {},
        ipv6_disabled=sysctl.read([IPV6_ALL]).get(IPV6_ALL) == "1",
        tor=running.status(endpoints(ctx, current), p, current.tor),
        config_differs=config_differs(ctx, current),
        guard=guard_status(ctx, current) if current.firewall else {},
        gateway=gatewayinfo.status(current.policy) if current.firewall else {},
        firewall=current.firewall,
    )


def config_differs(ctx: Context, current: State) -> str:
    """"" when the config on disk gives the plan in force, else what differs, in words."""
    if not current.plan_digest:
        return ""  # recorded by a netspectre that did not record its plan
    try:
        _, plan = plan_for(ctx)
    except Error as exc:
        return f"the config on disk cannot be used ({exc.message}); what is in force stays"
    if plan.digest(firewall=current.firewall) == current.plan_digest:
        return ""
    return "the config on disk differs from what is in force (" + ", ".join(
        _differences(plan, current)) + f"): run `{RESTART}` to apply it"


def _differences(plan: Plan, current: State) -> list[str]:
    parts = []
    if current.firewall and plan.policy.summary() != current.policy:
        parts.append("firewall")
    record = current.tor
    if record is not None and asdict(plan.endpoints) != asdict(record.endpoints):
        parts.append("tor ports")
    if record is not None and plan.torrc is not None and record.torrc_sha256 != plan.torrc_sha256:
        parts.append("torrc")
    return parts or ["firewall"]  # a LAN range past the recorded summary's first 16


def _safe_present(firewall: Firewall) -> bool:
    try:
        return firewall.present()
    except Error:
        return False


def lockdown(p: Paths) -> Lockdown | None:
    try:
        data = state.load_lockdown(p.lockdown)
    except StateError as exc:
        return Lockdown(reason=exc.message)
    if data is None:
        return None
    since = data.get("since")
    return Lockdown(reason=str(data.get("reason", "")),
                    since=float(since) if isinstance(since, int | float) else None)


def verify(ctx: Context, *, probe: bool = True, exit_check: bool = True) -> Checks:
    """The live self-test: the ruleset in force is the policy, the IPv6 sysctls, Tor's ports,
    then real leak probes (probes.py) and the exit check through Tor."""
    require_root("verify")
    config, p = ctx.config, ctx.paths
    current = state.load_current(p.state)
    found: list[Finding] = []
    active = current is not None and current.phase is Phase.ACTIVE
    found.append(Finding("state: active", active,
                         "no state" if current is None else current.phase.value,
                         "sudo netspectre start"))
    _, plan = plan_for(ctx)
    policy = plan.policy
    if current is not None and not current.firewall:
        found += _tor_only_findings(ctx, current)
    elif current is not None:
        differs = config_differs(ctx, current)
        if differs:
            found.append(Finding("config on disk is what is in force", False, differs, RESTART))
        found += _bypass_findings(current, policy)
        firewall = backends.open(current.backend, ctx.runner)
        live, want = firewall.listing(), firewall.expected(policy)
        found.append(Finding(f"ruleset in force equals the policy ({current.backend.value})",
                             live == want, "" if live == want else _first_difference(want, live),
                             RESTART))
        if policy.disable_ipv6:
            values = sysctl.read(sysctl.ipv6_keys(sysctl.interfaces()))
            on = sorted(k.split("/")[-2] for k, v in values.items() if v != "1")
            found.append(Finding("IPv6 disabled on every interface", not on,
                                 "enabled on: " + ", ".join(on) if on else "", RESTART))
    tor = running.status(endpoints(ctx, current), p, current.tor if current else None)
    fix = f"sudo netspectre status; {RESTART}"
    found.append(Finding("trans port listening", tor.trans_port_listening, "", fix))
    found.append(Finding("dns port listening", tor.dns_port_listening, "", fix))
    if current is not None and current.firewall:
        found += _guard_findings(ctx, current, policy, probe=probe)
        found += gatewayinfo.findings(gatewayinfo.status(current.policy))
    if probe and current is not None and current.firewall:
        v = config.verify
        battery = probes.battery(v.target4, v.target6, v.lan_dns,
                                 torify6=policy.torify_ipv6)
        firewall = backends.open(current.backend, ctx.runner)
        found += probes.run(battery, v.timeout, firewall.counters, config.tor.virtual_network)
    if exit_check:
        try:
            seen = myip(ctx)
        except Error as exc:
            found.append(Finding("exit check through Tor", False, exc.message, exc.hint or ""))
        else:
            found.append(Finding("exit check through Tor", seen.is_tor,
                                 f"exit {seen.ip}, IsTor {seen.is_tor}",
                                 "netspectre myip"))
    return Checks(tuple(found))


def _tor_only_findings(ctx: Context, current: State) -> list[Finding]:
    """`start --no-firewall`: nothing protects the machine, and verify says so (a failure)."""
    na = "not applicable: started with --no-firewall (no ruleset)"
    differs = config_differs(ctx, current)
    return [
        Finding("this machine's own traffic torified", False,
                "NO: started with --no-firewall; only `netspectre run` uses Tor",
                "sudo netspectre start (without --no-firewall) to torify the machine"),
        *([Finding("config on disk is what is in force", False, differs, RESTART)]
          if differs else []),
        Finding("ruleset in force equals the policy", None, na),
        Finding("leak probes", None, na),
    ]


def _bypass_findings(current: State, policy: Policy) -> list[Finding]:
    """The bypasses in force, listed (a hole in the kill switch by design), as configured."""
    from netspectre.cli_text import bypasses

    keys = ("bypass_users", "bypass_groups")
    recorded = {k: current.policy.get(k) for k in keys if current.policy.get(k)}
    wanted = {k: v for k, v in policy.summary().items() if k in keys}
    if not recorded and not wanted:
        return []
    listed = bypasses(recorded).pop().split(": ", 1)[-1] if recorded else "none"
    return [Finding("bypasses in force are the configured ones (direct, NOT torified)",
                    recorded == wanted, listed, RESTART)]


def guard_status(ctx: Context, current: State) -> dict[str, object]:
    from netspectre.backends import guardwatch

    return guardwatch.status(ctx.paths, current, ctx.runner)


def _guard_findings(ctx: Context, current: State, policy: Policy, *,
                    probe: bool) -> list[Finding]:
    """The guard on every interface (a table removed by hand is named), the watcher, and the
    AF_PACKET probe with and without PACKET_QDISC_BYPASS."""
    g = guard_status(ctx, current)
    if g["raw_guard"] != "on":
        return []  # off by choice or by necessity: status and doctor say why
    found: list[Finding] = []
    if not g["in_force"]:
        found.append(Finding("raw guard in force (table netdev netspectre)", False,
                             "table netdev netspectre is missing: removed by hand?", RESTART))
    else:
        guarded = set(map(str, g["guarded"]))  # type: ignore[call-overload]
        bare = [i for i in map(str, g["interfaces"]) if i not in guarded]  # type: ignore[call-overload]
        found.append(Finding("raw guard in force on every interface", not bare,
                             "not guarded: " + ", ".join(bare) if bare
                             else "guarded: " + ", ".join(sorted(guarded)), RESTART))
    found.append(Finding("raw guard's watcher running", g["watcher_pid"] is not None,
                         f"pid {g['watcher_pid']}" if g["watcher_pid"] else
                         "not running: interfaces created from now on are not guarded",
                         RESTART))
    link = rawprobe.uplink()
    if probe and link is not None:
        firewall = backends.open(current.backend, ctx.runner)
        found += rawprobe.run_raw(link, ctx.config.verify.target4, firewall.counters)
    elif probe:
        found.append(Finding("raw AF_PACKET probe", None, "no IPv4 default route to probe", ""))
    return found


def _first_difference(want: str, live: str) -> str:
    diff = [d for d in difflib.unified_diff(want.splitlines(), live.splitlines(), lineterm="",
                                            n=0) if d[:1] in "+-" and d[:3] not in ("+++", "---")]
    return "; ".join(diff[:4])


def rules(ctx: Context, backend_name: str | None) -> str:
    """What `start` would apply, rendered for a fresh system; needs no root, applies nothing."""
    config = ctx.config
    _, plan = plan_for(ctx)
    wanted = backend_name or str(config.firewall.backend)
    backend = backends.offline(wanted)
    firewall = (backends.open(backend, ctx.runner) if backend is not None
                else backends.detect(wanted, ctx.runner)[0])
    scripts = firewall.render(plan.policy, fresh=True)
    return "".join(f"# {' '.join(s.argv)}\n{s.text}" for s in scripts)


def newnym(ctx: Context) -> NewnymReport:
    require_root("newnym")
    return running.newnym(endpoints(ctx, state.load_current(ctx.paths.state)), ctx.paths)


def myip(ctx: Context) -> ExitReport:
    try:
        current = state.load_current(ctx.paths.state)
    except (StateError, OSError):  # not root, or no state: ask the configured tor
        current = None
    return running.myip(ctx.config, endpoints(ctx, current))
