"""start / stop / restart: one converge from what is recorded to the plan, and its undo.

`start --no-firewall` (issue 10) is toronly.py: no ruleset, no sysctl; a later full `start`
converges from it to full protection, keeping that tor; `stop` then touches no firewall.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable

from netspectre import backends, ipv6, state, sysctl
from netspectre.backends import Backend, Firewall, guardwatch
from netspectre.commands import Context, require_root
from netspectre.config import RawGuard, TorMode
from netspectre.errors import CleanupFailed, ConfigError, Error, StateError
from netspectre.facts import gather
from netspectre.paths import Paths
from netspectre.plan import Plan, derive
from netspectre.policy import HostFacts, Policy
from netspectre.reports import RestartReport, StartReport, StopReport, ago
from netspectre.state import Phase, State
from netspectre.tor import bootstrap, managed
from netspectre.tor.protocol import BootstrapEvent

OnEvent = Callable[[BootstrapEvent], None]


def _ipv6_sysctls(policy: Policy) -> dict[str, str]:
    if not policy.disable_ipv6:
        return {}
    return sysctl.read(sysctl.ipv6_keys(sysctl.interfaces()))


def plan_for(ctx: Context, backend: Backend | None = None) -> tuple[HostFacts, Plan]:
    """`backend`: the firewall that applies (None: the configured one, detected)."""
    if backend is None:
        try:
            backend = backends.detect(str(ctx.config.firewall.backend), ctx.runner)[0].backend
        except Error:
            backend = None  # no firewall tool: the guard is not probed (start refuses anyway)
    facts = gather(ctx.config, runner=ctx.runner, backend=backend)
    return facts, derive(ctx.config, facts, ctx.paths, which=ctx.runner.which)


def refuse_without_guard(ctx: Context, plan: Plan) -> None:
    """`raw_guard = "on"` where the guard cannot run: refused before anything changes."""
    if ctx.config.firewall.raw_guard is RawGuard.ON and not plan.policy.raw_guard:
        raise ConfigError(
            f'raw_guard = "on" but the guard cannot run here: {plan.policy.raw_guard_off}',
            'use the nft backend on kernel 5.16 or later, or set [firewall] raw_guard = '
            '"auto" (on where possible) or "off"; nothing was changed')


def converge(ctx: Context, current: State | None, plan: Plan, firewall: Firewall,
             facts: HostFacts) -> tuple[State, bool]:
    """From `current` (None: nothing of ours in force) to `plan`, never open in between.

    The intent is saved before every effect, so `stop` can undo a kill at any point. IPv6 goes
    off before any rule (it only closes, and makes a kill between iptables' per-family commits
    fail closed); the new ruleset is committed before an old backend's is removed (both
    block); Tor is (re)launched last, behind rules already in force. → (state, tor relaunched)
    """
    policy, p = plan.policy, ctx.paths
    # A start that died half-way left the original sysctl values in its state: keep them,
    # the live values may already be ours.
    # A restart that turns IPv6 off for the first time reads them now.
    fresh = current is None or (policy.disable_ipv6 and not current.sysctls)
    restarting = current is not None and current.phase is Phase.ACTIVE
    tor_only = current is not None and not current.firewall  # no rule of ours in force yet
    record = State(
        phase=Phase.APPLYING,
        backend=firewall.backend,
        since=current.since if current is not None and restarting else time.time(),
        boot_id=state.boot_id(),
        sysctls=_ipv6_sysctls(policy) if fresh or current is None else current.sysctls,
        policy=policy.summary(),
        config_path=ctx.config.path,
        tor=current.tor if current is not None else None,
        created=sorted({*(current.created if current else []), *firewall.absent_builtins()}),
        ipv6_config=(ipv6.snapshot() if policy.disable_ipv6 else {})
        if fresh or current is None else current.ipv6_config,
        plan_digest=plan.digest(),
    )
    state.save(p.state, record)
    for key, value in sysctl.desired(policy.disable_ipv6).items():
        sysctl.write(key, value)
    try:
        firewall.apply(policy)
    except Error as exc:
        # Nothing of the new ruleset is in force (each commit is atomic; iptables is tested
        # before the first). A fresh start is undone as if it never ran; otherwise the
        # previous rules still hold and the state keeps saying `applying` until stop.
        if current is None or tor_only:
            _undo_fresh(ctx, record, keep=current)
        exc.hint = exc.hint or "nothing was changed; run with --debug to see the commands"
        raise
    if current is not None and not tor_only and current.backend is not firewall.backend:
        backends.open(current.backend, ctx.runner).remove()
    # The guard's watcher: behind the guard already in force (it only adds interfaces).
    record = record.with_(guard_pid=guardwatch.converge(
        p, policy, ctx.config.path, current.guard_pid if current else None))
    # A kill before the next save leaves tor's pid files, which is how `stop` finds it then.
    tor, relaunched = managed.converge(ctx.config, p, record.tor, plan, facts)
    record = record.with_(tor=tor, phase=Phase.ACTIVE)
    state.save(p.state, record)
    state.save_endpoints(p.endpoints, record)
    state.remove(p.lockdown)
    return record, relaunched


def _undo_fresh(ctx: Context, record: State, *, keep: State | None = None) -> None:
    """Put back what a failed first apply changed; `keep`: the Tor-only state it came from."""
    for key, value in sysctl.restore_order(record.sysctls):
        sysctl.write(key, value)
    ipv6.restore(record.ipv6_config)
    backends.remove_everywhere(record.backend, ctx.runner)
    if keep is not None:
        state.save(ctx.paths.state, keep)
    else:
        state.remove(ctx.paths.state)


def start(ctx: Context, *, wait: bool = True, on_event: OnEvent | None = None,
          boot: bool = False, firewall: bool = True) -> StartReport:
    """Apply the firewall (fail closed), then Tor; record intent before every effect.
    firewall=False (`--no-firewall`): Tor only. A full start over a Tor-only one converges
    to full protection (keeping its tor); the reverse is refused: `stop` lifts protection."""
    require_root("start")
    config, p = ctx.config, ctx.paths
    if not firewall:
        from netspectre.commands import toronly

        return toronly.start(ctx, wait=wait, on_event=on_event)
    fw, evidence = backends.detect(str(config.firewall.backend), ctx.runner)
    facts, plan = plan_for(ctx, fw.backend)
    refuse_without_guard(ctx, plan)
    if not (boot and config.tor.mode is TorMode.SYSTEM):  # at boot the system tor comes later
        managed.preflight(config, p, plan)
    state.ensure_dir(p.run)
    with state.locked(p.lock):
        previous = state.load_current(p.state)
        if previous is not None and previous.phase is Phase.ACTIVE and previous.firewall:
            raise StateError(
                f"netspectre is already active (since {ago(previous.since, time.time())})",
                "use `netspectre restart` to apply a changed config, or `stop` first",
            )
        record, _ = converge(ctx, previous, plan, fw, facts)
    if wait and on_event is not None:
        bootstrap.wait(plan.endpoints, p, on_event, timeout=config.tor.bootstrap_timeout)
    return StartReport(backend=fw.backend.value, backend_evidence=evidence,
                       policy=plan.policy.summary(), ipv6_saved=record.sysctls)


def restart(ctx: Context, *, wait: bool = True,
            on_event: OnEvent | None = None) -> RestartReport:
    """Bring what is in force to the config now: the ruleset in one transaction, Tor
    relaunched behind it when its torrc changed. Protection never lapses. A Tor-only start
    stays Tor only."""
    require_root("restart")
    config, p = ctx.config, ctx.paths
    state.ensure_dir(p.run)
    with state.locked(p.lock, wait=True):
        current = state.load_current(p.state)
        if current is None or current.phase is not Phase.ACTIVE:
            raise StateError("netspectre is not active", "use `netspectre start`")
        if not current.firewall:
            from netspectre.commands import toronly

            facts, plan = toronly.plan(ctx)
            if current.plan_digest != plan.digest(firewall=False):
                managed.preflight(config, p, plan)
            _, relaunched = toronly.converge(ctx, current, plan, current.backend, facts)
            fw_name, evidence = "none", "--no-firewall: no ruleset"
        else:
            fw, evidence = backends.detect(str(config.firewall.backend), ctx.runner)
            facts, plan = plan_for(ctx, fw.backend)
            refuse_without_guard(ctx, plan)
            if current.sysctls and plan.policy.torify_ipv6:
                # IPv6 was turned off by this run's "disable": turning it back on is stop's.
                raise ConfigError('restart cannot turn IPv6 back on for ipv6 = "torify" (it is '
                                  'off since start with ipv6 = "disable")',
                                  "run `netspectre stop` then `netspectre start`; nothing was "
                                  "changed")
            if current.plan_digest != plan.digest():  # a changed config: refuse before change
                managed.preflight(config, p, plan)
            _, relaunched = converge(ctx, current, plan, fw, facts)
            fw_name = fw.backend.value
    if relaunched and wait and on_event is not None:
        bootstrap.wait(plan.endpoints, p, on_event, timeout=config.tor.bootstrap_timeout)
    return RestartReport(backend=fw_name, backend_evidence=evidence,
                         policy=plan.policy.summary() if current.firewall else {},
                         tor_relaunched=relaunched, firewall=current.firewall)


def stop(ctx: Context, *, force: bool = False) -> StopReport:
    """Remove what is ours and put back what we changed; from any phase, any number of times."""
    require_root("stop")
    p = ctx.paths
    notes: list[str] = []
    state.ensure_dir(p.run)
    with state.locked(p.lock, wait=True):
        try:
            current = state.load(p.state)
        except StateError as exc:
            if not force:
                raise
            notes.append(f"ignored unreadable state ({exc.message}); sysctls not restored")
            current = None
        if current is not None and current.boot_id != state.boot_id():
            notes.append("state is from a previous boot: the reboot reset rules and sysctls")
            state.remove(p.state)
            current = None
        if current is None:
            notes.append("no state recorded: removing whatever netspectre rules are present")
        else:
            state.save(p.state, current.with_(phase=Phase.STOPPING))
        failures: list[Error] = []
        try:  # Tor winds down first: the firewall still blocks everything while it does
            managed.stop(current.tor if current else None, p)
        except Error as exc:
            failures.append(exc)
        # The guard's watcher before the rules: it must not re-commit a table stop removed.
        failures += [Error(f, "run `netspectre stop` again") for f in guardwatch.stop(
            p, current.guard_pid if current else None)]
        pinned = current.backend if current is not None else None
        if current is None or current.firewall:  # a Tor-only start touched no firewall
            failures += backends.remove_everywhere(pinned, ctx.runner)
        if current is not None and not failures:
            failures += backends.remove_created(current.created, ctx.runner)
        restored: dict[str, str] = {}
        if current is not None:
            for key, value in sysctl.restore_order(current.sysctls):
                try:
                    sysctl.write(key, value)
                    restored[key] = value
                except OSError as exc:
                    failures.append(Error(f"could not restore {key}={value}: {exc}"))
            failures += ipv6.restore(current.ipv6_config)
        if failures:
            raise CleanupFailed(failures)
        state.remove(p.endpoints)
        state.remove(p.state)
        state.remove(p.lockdown)
        _forget_namespace_dirs(p)
    return StopReport(was_active=current is not None,
                      backend=current.backend.value if current and current.firewall else None,
                      sysctls_restored=restored, notes=tuple(notes))


def _forget_namespace_dirs(p: Paths) -> None:
    """A namespace's runtime dirs go with its stop (tests and the lab make many namespaces);
    the host's stay. Tor's DataDirectory (under paths.lib) is kept: it makes the next start warm.
    """
    if p.run.name.startswith("netns-"):
        shutil.rmtree(p.public, ignore_errors=True)
        shutil.rmtree(p.daemon, ignore_errors=True)
        shutil.rmtree(p.run, ignore_errors=True)
