"""The firewall backends: one `Firewall` object per backend (Mullvad's facade), how one is
chosen, and the sweep across all of them. Rendering is pure (nft.py, iptables.py); the objects
(nft_shell.py, iptables_shell.py) run every command through a `system.Runner`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from netspectre import system
from netspectre.backends import iptables, iptables_shell
from netspectre.backends.iptables_shell import IptablesFirewall, variant
from netspectre.backends.names import COUNTERS, Backend
from netspectre.backends.nft_shell import NftFirewall
from netspectre.backends.script import Script
from netspectre.errors import Error, MissingTool

if TYPE_CHECKING:
    from netspectre.policy import Policy

__all__ = [
    "AUTO", "CHOICES", "COUNTERS", "SYSTEM_IPTABLES", "Backend", "Firewall", "IptablesFirewall",
    "NftFirewall", "Script", "detect", "everywhere", "offline", "open", "remove_created",
    "remove_everywhere", "variant",
]

AUTO = "auto"  # nft if installed, else the system's iptables
SYSTEM_IPTABLES = "iptables"  # whichever flavour `iptables` is
# What `[firewall] backend` and `--backend` accept, in the order error messages list them.
CHOICES = (AUTO, Backend.NFT.value, SYSTEM_IPTABLES,
           *(b.value for b in Backend if b is not Backend.NFT))


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


def open(backend: Backend, runner: system.Runner = system.HOST) -> Firewall:
    """The firewall object for one backend."""
    if backend is Backend.NFT:
        return NftFirewall(runner)
    return IptablesFirewall(backend, runner)


def _tool(backend: Backend) -> str:
    return "nft" if backend is Backend.NFT else iptables.restore_argv(backend, 4)[0]


def detect(wanted: str, runner: system.Runner = system.HOST) -> tuple[Firewall, str]:
    """The firewall to use for a config choice (a CHOICES value) and the evidence for it
    (shown by `status`, pinned in state)."""
    if wanted == SYSTEM_IPTABLES:
        return open(variant(runner), runner), "configured (system iptables)"
    if wanted != AUTO:
        backend = Backend(wanted)
        runner.require(_tool(backend))
        return open(backend, runner), "configured"
    if runner.which("nft"):
        return (NftFirewall(runner),
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
               runner: system.Runner = system.HOST) -> tuple[Firewall, ...]:
    """Every backend's firewall, `first` first."""
    order = [first] if first else []
    return tuple(open(b, runner) for b in [*order, *(b for b in Backend if b is not first)])


def remove_everywhere(first: Backend | None,
                      runner: system.Runner = system.HOST) -> list[Error]:
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


def remove_created(created: list[str], runner: system.Runner = system.HOST) -> list[Error]:
    """Delete the built-in tables/chains `absent_builtins` recorded, where empty again."""
    return iptables_shell.remove_created(created, runner)
