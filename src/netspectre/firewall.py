"""Pick a backend from evidence, apply/remove its rendered scripts, read its counters (shell)."""

from __future__ import annotations

from netspectre import system
from netspectre.backends import Backend, Script
from netspectre.config import BackendName
from netspectre.errors import CommandFailed, Error, MissingTool
from netspectre.policy import TABLE, Policy


def detect(wanted: BackendName) -> tuple[Backend, str]:
    """The backend to use and the evidence for it (shown by `status`, pinned in state)."""
    if wanted is BackendName.NFT:
        system.require("nft")
        return Backend.NFT, "configured"
    if wanted is BackendName.IPTABLES_NFT:
        system.require("iptables-nft-restore")
        return Backend.IPTABLES_NFT, "configured"
    if wanted is BackendName.IPTABLES_LEGACY:
        system.require("iptables-legacy-restore")
        return Backend.IPTABLES_LEGACY, "configured"
    if wanted is BackendName.IPTABLES:
        return _iptables_variant(), "configured (system iptables)"
    if system.which("nft"):
        return Backend.NFT, "nft found: own table inet netspectre, independent of iptables"
    if system.which("iptables-restore"):
        variant = _iptables_variant()
        return variant, f"nft not found; system iptables is {variant.value}"
    raise MissingTool(
        "neither nft nor iptables-restore found",
        "install nftables (apt install nftables)",
    )


def _iptables_variant() -> Backend:
    system.require("iptables-restore")
    version = system.run(["iptables", "--version"]).stdout
    if "nf_tables" in version:
        return Backend.IPTABLES_NFT
    return Backend.IPTABLES_LEGACY


def _iptables_saves(variant: Backend, *, counters: bool = False) -> tuple[str, str]:
    from netspectre.backends import iptables

    v4 = system.run(iptables.save_argv(variant, 4, counters=counters)).stdout
    v6 = system.run(iptables.save_argv(variant, 6, counters=counters)).stdout
    return v4, v6


def _run_scripts(scripts: tuple[Script, ...]) -> None:
    for script in scripts:
        system.run(script.argv, input=script.text)


def render(backend: Backend, policy: Policy) -> tuple[Script, ...]:
    """What `start` would apply right now (iptables needs to see the live tables)."""
    if backend is Backend.NFT:
        from netspectre.backends import nft

        return nft.render(policy)
    from netspectre.backends import iptables

    v4, v6 = _iptables_saves(backend)
    return iptables.render(policy, variant=backend, saved_v4=v4, saved_v6=v6)


def apply(backend: Backend, policy: Policy) -> None:
    """Apply the whole ruleset; each script is one atomic transaction (IPv6 first for iptables)."""
    scripts = render(backend, policy)
    if backend is not Backend.NFT:
        for script in scripts:  # iptables commits per table: test everything before any commit
            system.run([*script.argv, "--test"], input=script.text)
    _run_scripts(scripts)


def remove(backend: Backend) -> None:
    """Remove exactly what is ours from one backend; safe when nothing is there."""
    if backend is Backend.NFT:
        if system.which("nft") is None:
            return
        from netspectre.backends import nft

        _run_scripts(nft.teardown())
        return
    from netspectre.backends import iptables

    if system.which(iptables.save_argv(backend, 4)[0]) is None:
        return
    v4, v6 = _iptables_saves(backend)
    _run_scripts(iptables.teardown(variant=backend, saved_v4=v4, saved_v6=v6))


def remove_everywhere(first: Backend | None) -> list[Error]:
    """Sweep every backend (the pinned one first); collect failures instead of stopping."""
    order = [first] if first else []
    order += [b for b in Backend if b is not first]
    failures: list[Error] = []
    for backend in order:
        try:
            remove(backend)
        except Error as exc:
            failures.append(exc)
    return failures


def active(backend: Backend) -> bool:
    if backend is Backend.NFT:
        if system.which("nft") is None:
            return False
        return system.run(["nft", "list", "table", "inet", TABLE], check=False).returncode == 0
    try:
        v4, v6 = _iptables_saves(backend)
    except (CommandFailed, MissingTool):
        return False
    from netspectre.backends import iptables

    return bool(iptables.teardown(variant=backend, saved_v4=v4, saved_v6=v6))


def counters(backend: Backend) -> dict[str, dict[str, int]]:
    if backend is Backend.NFT:
        from netspectre.backends import nft

        out = system.run(["nft", "-j", "list", "counters", "table", "inet", TABLE]).stdout
        return nft.parse_counters(out)
    from netspectre.backends import iptables

    v4, v6 = _iptables_saves(backend, counters=True)
    return iptables.parse_counters(v4, v6)
