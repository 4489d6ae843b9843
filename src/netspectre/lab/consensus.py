"""The private network's consensus: when the authorities vote, and polling them (over their
control sockets) until the relays' descriptors and then the consensus list every relay.

Tor starts voting intervals at midnight UTC + TestingV3AuthVotingStartOffset; the first consensus
is valid from the first interval boundary after the authorities start, and its vote happens
VoteDelay + DistDelay (4 s) before it. A vote before every relay uploaded its descriptor gives a
consensus without them, and the next one comes a whole interval later. So `up` picks an offset
for a typical start, and if the tors were slower than that (a busy machine), moves the first
consensus to a few seconds after the last descriptor arrived.
"""

from __future__ import annotations

import math
import time

from netspectre.errors import TorError
from netspectre.lab import control
from netspectre.lab.control import consensus_relays
from netspectre.lab.spec import LabSpec, Layout
from netspectre.lab.torrc import INITIAL_VOTE_AND_DIST, INITIAL_VOTING_INTERVAL

# Seconds from choosing the offset to the first consensus: the tors start right after and their
# descriptors reach every authority within ~2 s on a 2-core machine; the vote is 4 s before the
# consensus. Slower starts are caught by `schedule`.
VOTE_LEAD = 7.0
# When rescheduling: seconds from "every descriptor is in" to the consensus (vote 1 s later).
RESCHEDULE_DELAY = 5
RESCHEDULE_INTERVAL = 20  # also the interval of every consensus after the first
POLL = 0.1


def next_boundary(now: float, *, interval: int, offset: int) -> int:
    """The first interval start strictly after `now` (intervals here divide a day evenly)."""
    t = math.floor(now) + 1
    return t + (offset - t) % interval


def initial_offset(now: float, *, lead: float = VOTE_LEAD) -> int:
    """The offset whose first boundary falls `lead` seconds (rounded down) after `now`."""
    return math.floor(now + lead) % INITIAL_VOTING_INTERVAL


def _getinfo(spec: LabSpec, nick: str, key: str) -> str:
    return control.getinfo(spec.dir / nick / "control", key, timeout=5.0)


def relays(spec: LabSpec, nick: str = "auth1") -> dict[str, set[str]]:
    """{nickname: flags} from an authority's current consensus; {} when it has none yet."""
    try:
        return consensus_relays(_getinfo(spec, nick, "ns/all"))
    except TorError:
        return {}


def descriptors(spec: LabSpec, nick: str) -> set[str]:
    """Nicknames of the relays whose descriptors an authority holds."""
    try:
        text = _getinfo(spec, nick, "desc/all-recent")
    except TorError:
        return set()
    return {line.split()[1] for line in text.splitlines() if line.startswith("router ")}


def _poll(what: str, deadline: float, spec: LabSpec) -> None:
    if time.monotonic() > deadline:
        raise TorError(
            f"the private network: {what}",
            f"see auth*/notice.log in the lab directory ({spec.dir})",
        )
    time.sleep(POLL)


def wait_descriptors(spec: LabSpec, lay: Layout, *, deadline: float) -> None:
    want = {r.nick for r in lay.relays}
    while True:
        held = [descriptors(spec, a.nick) for a in lay.authorities]
        if all(want <= h for h in held):
            return
        missing = sorted(n for n in want if not all(n in h for h in held))
        _poll(f"descriptors of {', '.join(missing)} never reached every authority", deadline, spec)


def schedule(spec: LabSpec, lay: Layout, *, natural: int) -> int:
    """Called once every descriptor is in: keep the scheduled first consensus (valid-after
    `natural`) if its vote is still to come, else move it RESCHEDULE_DELAY s ahead on every
    authority. Returns the expected valid-after time."""
    now = time.time()
    if natural - INITIAL_VOTE_AND_DIST > now + 0.2:
        return natural
    target = math.ceil(now + RESCHEDULE_DELAY)
    # SETCONF of the voting options makes an authority recompute its schedule right away. The
    # interval is the one every consensus has (a consensus missing relays may already exist).
    setconf = (
        f"SETCONF TestingV3AuthInitialVotingInterval={RESCHEDULE_INTERVAL} "
        f"TestingV3AuthVotingStartOffset={target % RESCHEDULE_INTERVAL}"
    )
    for a in lay.authorities:
        with control.connect(spec.dir / a.nick / "control", timeout=5.0) as ctl:
            ctl.command(setconf, timeout=5.0)
    return target


def wait_listed(spec: LabSpec, lay: Layout, *, deadline: float) -> None:
    """Poll every authority until its consensus lists every relay as Running and every
    authority as HSDir (where the onion service's upload watcher expects its uploads)."""
    want = {r.nick for r in lay.relays}
    auths = {r.nick for r in lay.authorities}
    while True:
        views = [relays(spec, a.nick) for a in lay.authorities]
        running = [{n for n, f in v.items() if "Running" in f} for v in views]
        hsdirs = [{n for n, f in v.items() if "HSDir" in f} for v in views]
        if all(want <= r and auths <= h for r, h in zip(running, hsdirs, strict=True)):
            return
        seen = ", ".join(sorted(views[0])) or "nothing"
        _poll(f"no consensus lists every relay (auth1's lists {seen})", deadline, spec)
