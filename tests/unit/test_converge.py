"""The shell's ordering, without root: converge (start/restart's one sequence) against a
stateful fake Runner and a state file in a temporary directory."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from netspectre import backends, config, state, system
from netspectre.backends import Backend
from netspectre.commands import Context
from netspectre.commands.lifecycle import converge
from netspectre.errors import CommandFailed
from netspectre.paths import Paths
from netspectre.plan import derive
from netspectre.policy import HostFacts
from netspectre.state import Phase, State
from netspectre.tor.record import Endpoints, TorRecord
from tests.support.fakehost import FakeHost

FACTS = HostFacts(tor_uid=102, tor_user="debian-tor")
# System tor (nothing to launch) and ipv6 = "block" (no sysctl to write): only the firewall
# and the state file are touched, so the order between them is all there is to see.
TEXT = '[tor]\nmode = "system"\n[firewall]\nipv6 = "block"\n'


class PhaseSpy(FakeHost):
    """Records, for every command, the phase the state file says at that moment."""

    def __init__(self, state_path: Path, *tools: str, fail: str = "") -> None:
        super().__init__(*tools)
        self.state_path = state_path
        self.phases: list[tuple[str, str | None]] = []
        self.fail = fail

    def run(self, argv: Sequence[str], *, input: str | None = None, check: bool = True,
            timeout: float = 60.0, env: dict[str, str] | None = None) -> system.Result:
        on_disk = state.load(self.state_path)
        self.phases.append((" ".join(argv), on_disk.phase.value if on_disk else None))
        if self.fail and " ".join(argv).startswith(self.fail):
            raise CommandFailed(tuple(argv), 1, "fake failure")
        return super().run(argv, input=input, check=check, timeout=timeout, env=env)


def setup(tmp_path: Path, text: str = TEXT, *tools: str,
          fail: str = "") -> tuple[Context, PhaseSpy]:
    paths = Paths(run=tmp_path / "run", lib=tmp_path / "lib", daemon=tmp_path / "run-tor")
    paths.run.mkdir()
    spy = PhaseSpy(paths.state, *(tools or ("nft",)), fail=fail)
    return Context(config=config.parse(text), paths=paths, runner=spy), spy


def test_intent_is_saved_before_the_ruleset_and_active_after(tmp_path: Path) -> None:
    ctx, spy = setup(tmp_path)
    plan = derive(ctx.config, FACTS, ctx.paths)
    record, relaunched = converge(ctx, None, plan, backends.open(Backend.NFT, spy), FACTS)
    applied = [phase for command, phase in spy.phases if command == "nft -f -"]
    assert applied == ["applying"]  # the kernel changed only after the intent was on disk
    assert record.phase is Phase.ACTIVE and not relaunched
    assert state.load(ctx.paths.state) == record
    assert record.plan_digest == plan.digest() and record.tor == TorRecord(plan.endpoints)


def test_a_failed_commit_on_a_fresh_start_leaves_no_state(tmp_path: Path) -> None:
    ctx, spy = setup(tmp_path, fail="nft -f")
    plan = derive(ctx.config, FACTS, ctx.paths)
    with pytest.raises(CommandFailed) as raised:
        converge(ctx, None, plan, backends.open(Backend.NFT, spy), FACTS)
    assert raised.value.hint and "nothing was changed" in raised.value.hint
    assert state.load(ctx.paths.state) is None


def test_a_failed_commit_on_restart_keeps_the_recording(tmp_path: Path) -> None:
    """The old ruleset still holds (the commit is atomic): state still names it, `stop` works."""
    ctx, spy = setup(tmp_path, fail="nft -f")
    plan = derive(ctx.config, FACTS, ctx.paths)
    old = State(phase=Phase.ACTIVE, backend=Backend.NFT, since=1.0, boot_id=state.boot_id(),
                tor=TorRecord(Endpoints.of(ctx.config)))
    state.save(ctx.paths.state, old)
    with pytest.raises(CommandFailed):
        converge(ctx, old, plan, backends.open(Backend.NFT, spy), FACTS)
    kept = state.load(ctx.paths.state)
    assert kept is not None and kept.backend is Backend.NFT and kept.phase is Phase.APPLYING


def test_restart_to_another_backend_commits_the_new_rules_before_removing_the_old(
        tmp_path: Path) -> None:
    legacy = ("iptables-legacy-save", "ip6tables-legacy-save", "iptables-legacy-restore",
              "ip6tables-legacy-restore")
    ctx, spy = setup(tmp_path, TEXT, "nft", *legacy)
    plan = derive(ctx.config, FACTS, ctx.paths)
    old = State(phase=Phase.ACTIVE, backend=Backend.IPTABLES_LEGACY, since=5.0,
                boot_id=state.boot_id(), tor=TorRecord(plan.endpoints))
    state.save(ctx.paths.state, old)
    before = time.time()
    record, _ = converge(ctx, old, plan, backends.open(Backend.NFT, spy), FACTS)
    commands = [c for c, _ in spy.phases]
    first_nft = commands.index("nft -f -")
    first_legacy = next(i for i, c in enumerate(commands) if "legacy" in c)
    assert first_nft < first_legacy, commands  # both block: nothing slips between
    assert record.backend is Backend.NFT
    assert record.since == 5.0 < before  # a restart keeps the time protection began
