"""`start --no-firewall` (issue 10): the managed tor and its supervisor, nothing else.

No ruleset, no sysctl, no raw guard: the machine's own traffic is NOT torified, only
`netspectre run` uses this tor (it reads paths.endpoints). Recorded as `State.firewall =
False`; `restart` keeps the mode, `stop` ends tor and touches no firewall, and a full `start`
converges from here to full protection (lifecycle.converge keeps the tor when it can).
"""

from __future__ import annotations

import time

from netspectre import backends, state
from netspectre.backends import Backend
from netspectre.commands import Context
from netspectre.commands.lifecycle import OnEvent
from netspectre.config import TorMode
from netspectre.errors import ConfigError, Error, StateError
from netspectre.facts import gather
from netspectre.plan import Plan, derive
from netspectre.policy import HostFacts
from netspectre.reports import StartReport
from netspectre.state import Phase, State
from netspectre.tor import bootstrap, managed


def plan(ctx: Context) -> tuple[HostFacts, Plan]:
    """The plan of a Tor-only start: no backend, no guard probed (its policy is not applied).
    A [gateway] is refused: its tor listeners bind 0.0.0.0/[::], and only the firewall's input
    chain keeps them from the uplink (they would be an open proxy for the whole network)."""
    if ctx.config.gateway.interfaces:
        raise ConfigError(
            "[gateway] needs the firewall: `start --no-firewall` would leave its tor listeners "
            "(0.0.0.0/[::]) open to every network",
            f"drop --no-firewall, or empty [gateway] interfaces in "
            f"{ctx.config.path or 'the config'}; nothing was changed")
    facts = gather(ctx.config)
    return facts, derive(ctx.config, facts, ctx.paths, which=ctx.runner.which)


def converge(ctx: Context, current: State | None, plan: Plan, backend: Backend,
             facts: HostFacts) -> tuple[State, bool]:
    """`start --no-firewall`: the managed tor and its supervisor, nothing else. The machine's
    own traffic is NOT torified; only `netspectre run` uses this tor."""
    p = ctx.paths
    record = State(
        phase=Phase.APPLYING, backend=backend, boot_id=state.boot_id(),
        since=current.since if current is not None and current.phase is Phase.ACTIVE
        else time.time(),
        config_path=ctx.config.path, tor=current.tor if current is not None else None,
        plan_digest=plan.digest(firewall=False), firewall=False,
    )
    state.save(p.state, record)
    tor, relaunched = managed.converge(ctx.config, p, record.tor, plan, facts)
    record = record.with_(tor=tor, phase=Phase.ACTIVE)
    state.save(p.state, record)
    state.save_endpoints(p.endpoints, record)
    return record, relaunched


def _would_use(ctx: Context) -> Backend:
    """The backend a full start would use (recorded, never applied, by a Tor-only start)."""
    try:
        return backends.detect(str(ctx.config.firewall.backend), ctx.runner)[0].backend
    except Error:
        return Backend.NFT  # no firewall tool: nothing to record but a placeholder


def start(ctx: Context, *, wait: bool, on_event: OnEvent | None) -> StartReport:
    config, p = ctx.config, ctx.paths
    if config.tor.mode is not TorMode.MANAGED:
        raise ConfigError("`start --no-firewall` runs netspectre's own tor, but [tor] mode is "
                          f"{config.tor.mode.value!r}",
                          'set [tor] mode = "managed", or use the system tor as it is')
    backend = _would_use(ctx)
    facts, planned = plan(ctx)
    managed.preflight(config, p, planned)
    state.ensure_dir(p.run)
    with state.locked(p.lock):
        previous = state.load_current(p.state)
        if previous is not None and previous.firewall:
            raise StateError(
                "netspectre is active with its firewall" if previous.phase is Phase.ACTIVE
                else f"a previous start left its state ({previous.phase.value})",
                "`sudo netspectre stop` first: --no-firewall never lifts a firewall in force")
        if previous is not None and previous.phase is Phase.ACTIVE:
            raise StateError("netspectre is already running Tor only (--no-firewall)",
                             "`netspectre restart` applies a changed [tor] config")
        converge(ctx, previous, planned, backend, facts)
    if wait and on_event is not None:
        bootstrap.wait(planned.endpoints, p, on_event, timeout=config.tor.bootstrap_timeout)
    return StartReport(backend="none", backend_evidence="--no-firewall: no ruleset",
                       policy={}, ipv6_saved={}, firewall=False)
