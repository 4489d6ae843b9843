"""The firewall backends: one `Firewall` object per backend (Mullvad's facade), how one is
chosen, and the sweep across all of them. Rendering is pure (nft.py, iptables.py); the objects
(nft_shell.py, iptables_shell.py) run every command through a `system.Runner`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from netspectre.backends.names import AUTO, CHOICES, COUNTERS, SYSTEM_IPTABLES, Backend
from netspectre.errors import Error, MissingTool

# The objects' modules are imported where an object is made: `--help` and the config need only
# the names above, and a start on nft needs neither the iptables renderer nor its shell
# (together 3-4 ms of a start, bench/perf.py).

if TYPE_CHECKING:
    from netspectre import system
    from netspectre.backends.script import Script
    from netspectre.policy import Policy

__all__ = [
    "AUTO", "CHOICES", "COUNTERS", "SYSTEM_IPTABLES", "Backend", "Firewall", "detect",
    "everywhere", "offline", "open", "remove_created", "remove_everywhere", "variant",
]

class Firewall(Protocol):
    """One backend's view of our rules. Every method is safe to call as root at any time."""

    @property
    def backend(self) -> Backend: ...

    def render(self, policy: Policy, *, fresh: bool = False) -> tuple[Script, ...]:
        """The scripts `apply` would run now; `fresh`: on a system without any rules (what
        `netspectre rules` prints)."""
        ...

    def apply(self, policy: Policy) -> None:
        """Put the whole ruleset in force (nft: one transaction; iptables: one per family)."""
        ...

    def remove(self) -> None:
        """Remove exactly what is ours; a no-op when nothing is there or the tool is missing."""
        ...

    def may_hold_ours(self) -> bool:
        """Cheap evidence that rules of ours could be here (False: `present` would be too)."""
        ...

    def present(self) -> bool:
        """Rules of ours are in force."""
        ...

    def counters(self) -> dict[str, dict[str, int]]:
        """{counter name: {"packets", "bytes"}} for names.COUNTERS."""
        ...

    def listing(self) -> str:
        """Our part of the live ruleset as the kernel reports it, normalised."""
        ...

    def expected(self, policy: Policy) -> str:
        """What `listing` would show for `policy` (loaded in a throwaway namespace)."""
        ...

    def absent_builtins(self) -> tuple[str, ...]:
        """Built-in tables/chains applying would create ("ip filter", "ip filter INPUT"):
        iptables-nft's bookkeeping for `remove_created`; () elsewhere."""
        ...


def _host(runner: system.Runner | None) -> system.Runner:
    """The runner given, else the real host's."""
    if runner is not None:
        return runner
    from netspectre import system

    return system.HOST


def open(backend: Backend, runner: system.Runner | None = None) -> Firewall:
    """The firewall object for one backend."""
    runner = _host(runner)
    if backend is Backend.NFT:
        from netspectre.backends.nft_shell import NftFirewall

        return NftFirewall(runner)
    from netspectre.backends.iptables_shell import IptablesFirewall

    return IptablesFirewall(backend, runner)


def variant(runner: system.Runner | None = None) -> Backend:
    """Which flavour the system's `iptables` is (iptables-nft or iptables-legacy)."""
    from netspectre.backends import iptables_shell

    return iptables_shell.variant(_host(runner))


def _tool(backend: Backend) -> str:
    if backend is Backend.NFT:
        return "nft"
    from netspectre.backends import iptables

    return iptables.restore_argv(backend, 4)[0]


def detect(wanted: str, runner: system.Runner | None = None) -> tuple[Firewall, str]:
    """The firewall to use for a config choice (a CHOICES value) and the evidence for it
    (shown by `status`, pinned in state)."""
    runner = _host(runner)
    if wanted == SYSTEM_IPTABLES:
        return open(variant(runner), runner), "configured (system iptables)"
    if wanted != AUTO:
        backend = Backend(wanted)
        runner.require(_tool(backend))
        return open(backend, runner), "configured"
    if runner.which("nft"):
        return (open(Backend.NFT, runner),
                "nft found: own table inet netspectre, independent of iptables")
    if runner.which("iptables-restore"):
        found = variant(runner)
        return open(found, runner), f"nft not found; system iptables is {found.value}"
    raise MissingTool(
        "neither nft nor iptables-restore found",
        "install nftables (apt install nftables)",
    )


def offline(wanted: str) -> Backend | None:
    """The backend a choice names without asking the system (None for "auto"): the system's
    iptables is taken to be iptables-nft, as `netspectre rules` renders it."""
    if wanted == AUTO:
        return None
    return Backend.IPTABLES_NFT if wanted == SYSTEM_IPTABLES else Backend(wanted)


def everywhere(first: Backend | None = None,
               runner: system.Runner | None = None) -> tuple[Firewall, ...]:
    """Every backend's firewall, `first` first."""
    order = [first] if first else []
    return tuple(open(b, runner) for b in [*order, *(b for b in Backend if b is not first)])


def remove_everywhere(first: Backend | None,
                      runner: system.Runner | None = None) -> list[Error]:
    """Sweep every backend (the pinned one first); collect failures instead of stopping.

    Even with a pinned backend the others are swept: a `restart` that switched backends and
    was killed half-way leaves rules in two places.
    """
    failures: list[Error] = []
    for firewall in everywhere(first, runner):
        try:
            if firewall.backend is first or firewall.may_hold_ours():
                firewall.remove()
        except Error as exc:
            failures.append(exc)
    return failures


def remove_created(created: list[str], runner: system.Runner | None = None) -> list[Error]:
    """Delete the built-in tables/chains `absent_builtins` recorded, where empty again."""
    from netspectre.backends import iptables_shell

    return iptables_shell.remove_created(created, _host(runner))
