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
    """Apply the whole ruleset; nft in one transaction, iptables in one commit per family.

    iptables renders IPv6 (the family that only blocks) first. When the IPv6 sysctl is already
    off (`start` sets it before calling us), IPv4 goes first instead: a `kill -9` between the
    two commits then leaves IPv4 torified and IPv6 dead, not IPv4 open.
    """
    scripts = render(backend, policy)
    if backend is not Backend.NFT:
        for script in scripts:  # iptables commits per table: test everything before any commit
            system.run([*script.argv, "--test"], input=script.text)
        if policy.disable_ipv6:
            scripts = tuple(reversed(scripts))
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


def _may_hold_ours(backend: Backend) -> bool:
    """Cheap evidence that a backend could hold rules of ours (skips needless saves in `stop`)."""
    if backend is Backend.IPTABLES_LEGACY:
        names = ""
        for path in ("/proc/net/ip_tables_names", "/proc/net/ip6_tables_names"):
            try:
                with open(path) as f:
                    names += f.read()
            except OSError:
                continue
        return bool(names.strip())
    if backend is Backend.IPTABLES_NFT and system.which("nft"):
        tables = system.run(["nft", "list", "tables"], check=False).stdout
        return any(f"table {fam} {t}" in tables for fam in ("ip", "ip6")
                   for t in ("filter", "nat"))
    return True


def remove_everywhere(first: Backend | None) -> list[Error]:
    """Sweep every backend (the pinned one first); collect failures instead of stopping.

    Even with a pinned backend the others are swept: a `restart` that switched backends and
    was killed half-way leaves rules in two places.
    """
    order = [first] if first else []
    order += [b for b in Backend if b is not first]
    failures: list[Error] = []
    for backend in order:
        try:
            if backend is first or _may_hold_ours(backend):
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


def _normalise(listing: str) -> str:
    """Drop what changes at run time (counter values, handles, generated comments)."""
    import re

    lines = []
    for line in listing.splitlines():
        line = re.sub(r"packets \d+ bytes \d+", "", line)
        line = re.sub(r"\[\d+:\d+\]", "[0:0]", line)
        line = re.sub(r"\s+# handle \d+", "", line).rstrip()
        if line.startswith("#") or not line.strip():
            continue
        lines.append(line)
    return "\n".join(lines) + "\n"


def ours(backend: Backend) -> str:
    """The part of the live ruleset that is ours, as the kernel reports it, normalised."""
    if backend is Backend.NFT:
        proc = system.run(["nft", "list", "table", "inet", TABLE], check=False)
        return _normalise(proc.stdout) if proc.returncode == 0 else ""
    v4, v6 = _iptables_saves(backend)
    return _ours_iptables(v4, v6)


def _ours_iptables(v4: str, v6: str) -> str:
    from netspectre.policy import MARKER

    keep = []
    for family, text in (("ipv4", v4), ("ipv6", v6)):
        for line in _normalise(text).splitlines():
            if "NETSPECTRE" in line or f'"{MARKER}' in line or f" {MARKER}:" in line:
                keep.append(f"{family} {line}")
    return "\n".join(keep) + "\n"


def expected(backend: Backend, policy: Policy) -> str:
    """What the kernel would report for our rendered policy, from a throwaway namespace."""
    system.require("unshare")
    if backend is Backend.NFT:
        from netspectre.backends import nft

        # Listed by a second nft: inside the loading batch, sets print as raw interval ends.
        out = system.run(
            ["unshare", "--net", "sh", "-c", f"nft -f - && nft list table inet {TABLE}"],
            input=nft.render(policy)[0].text,
        ).stdout
        return _normalise(out)
    from netspectre.backends import iptables

    scripts = iptables.render(policy, variant=backend, saved_v4="", saved_v6="")
    saved = []
    for family in (4, 6):
        script = next(s for s in scripts if s.argv[0].startswith("ip6" if family == 6 else "ipt"))
        save = " ".join(iptables.save_argv(backend, family))
        # Fixed argv, no user input in the shell text: restore then save in one namespace.
        out = system.run(
            ["unshare", "--net", "sh", "-c", f"{' '.join(script.argv)} && {save}"],
            input=script.text,
        ).stdout
        saved.append(out)
    return _ours_iptables(saved[0], saved[1])


# iptables-nft creates the built-in chains (and tables) that a rule needs on first use, and
# nothing removes them afterwards. `start` records which did not exist before it; `stop`
# deletes those of them that are empty again, so `nft list ruleset` is as it was.
_BUILTIN = {
    ("ip", "filter"): ("INPUT", "FORWARD", "OUTPUT"),
    ("ip", "nat"): ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    ("ip6", "filter"): ("INPUT", "FORWARD", "OUTPUT"),
}


def _nft_objects() -> dict[str, int]:
    """{"ip filter": n_chains, "ip filter INPUT": n_rules, …} for iptables-nft's tables."""
    import json

    out = system.run(["nft", "-j", "list", "ruleset"]).stdout
    counts: dict[str, int] = {}
    for item in json.loads(out).get("nftables", []):
        for kind in ("table", "chain", "rule"):
            obj = item.get(kind)
            if not obj or (obj.get("family"), obj.get("table", obj.get("name"))) not in _BUILTIN:
                continue
            fam, table = obj["family"], obj.get("table", obj.get("name"))
            if kind == "table":
                counts.setdefault(f"{fam} {table}", 0)
            elif kind == "chain":
                counts[f"{fam} {table}"] = counts.get(f"{fam} {table}", 0) + 1
                counts.setdefault(f"{fam} {table} {obj['name']}", 0)
            else:
                key = f"{fam} {table} {obj['chain']}"
                counts[key] = counts.get(key, 0) + 1
    return counts


def absent_builtins(backend: Backend) -> list[str]:
    """iptables-nft tables/chains that do not exist yet (so that `stop` may remove them)."""
    if backend is not Backend.IPTABLES_NFT or system.which("nft") is None:
        return []
    present = _nft_objects()
    wanted = [f"{f} {t}" for f, t in _BUILTIN] + [
        f"{f} {t} {c}" for (f, t), chains in _BUILTIN.items() for c in chains
    ]
    return [w for w in wanted if w not in present]


def remove_created(created: list[str]) -> list[Error]:
    """Delete the recorded tables/chains that are empty now (someone else's rules keep them)."""
    if not created or system.which("nft") is None:
        return []
    failures: list[Error] = []
    present = _nft_objects()
    chains = [c for c in created if c.count(" ") == 2 and present.get(c) == 0]
    for chain in chains:
        fam, table, name = chain.split(" ")
        try:
            system.run(["nft", "delete", "chain", fam, table, name])
        except Error as exc:
            failures.append(exc)
    present = _nft_objects()
    for table in (c for c in created if c.count(" ") == 1 and present.get(c) == 0):
        fam, name = table.split(" ")
        try:
            system.run(["nft", "delete", "table", fam, name])
        except Error as exc:
            failures.append(exc)
    return failures
