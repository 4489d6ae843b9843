"""The iptables firewalls (nft and legacy variants): our chains and marked jumps, applied and
read back through a Runner, plus iptables-nft's built-in bookkeeping (shell)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from netspectre import system
from netspectre.backends import iptables
from netspectre.backends.names import Backend
from netspectre.backends.script import Script, normalise
from netspectre.errors import CommandFailed, Error, MissingTool

if TYPE_CHECKING:
    from netspectre.policy import Policy

PROC_NET = Path("/proc/net")


def variant(runner: system.Runner = system.HOST) -> Backend:
    """The flavour the system's `iptables` is (what `backend = "iptables"` means)."""
    runner.require("iptables-restore")
    version = runner.run(["iptables", "--version"]).stdout
    return Backend.IPTABLES_NFT if "nf_tables" in version else Backend.IPTABLES_LEGACY


class IptablesFirewall:
    """Our own chains plus one marked jump per hook, one iptables-restore commit per family."""

    def __init__(self, variant: Backend, runner: system.Runner = system.HOST, *,
                 proc_net: Path = PROC_NET) -> None:
        iptables.save_argv(variant, 4)  # ValueError for anything but an iptables variant
        self.backend = variant
        self.runner = runner
        self.proc_net = proc_net

    def __repr__(self) -> str:
        return f"IptablesFirewall({self.backend.value!r})"

    def _saves(self, *, counters: bool = False) -> tuple[str, str]:
        v4 = self.runner.run(iptables.save_argv(self.backend, 4, counters=counters)).stdout
        v6 = self.runner.run(iptables.save_argv(self.backend, 6, counters=counters)).stdout
        return v4, v6

    def _run(self, scripts: tuple[Script, ...]) -> None:
        for script in scripts:
            self.runner.run(script.argv, input=script.text)

    def render(self, policy: Policy, *, fresh: bool = False) -> tuple[Script, ...]:
        """What `apply` would commit now (the plan depends on the live tables), or on a system
        with no rules at all when `fresh`."""
        v4, v6 = ("", "") if fresh else self._saves()
        return iptables.render(policy, variant=self.backend, saved_v4=v4, saved_v6=v6)

    def apply(self, policy: Policy) -> None:
        """Test every script, then commit them one family at a time.

        IPv6 (the family that only blocks) goes first. When the IPv6 sysctl is already off
        (`start` sets it before calling us), IPv4 goes first instead: a `kill -9` between the
        two commits then leaves IPv4 torified and IPv6 dead, not IPv4 open.
        """
        scripts = self.render(policy)
        for script in scripts:  # iptables commits per table: test everything before any commit
            self.runner.run([*script.argv, "--test"], input=script.text)
        self._run(tuple(reversed(scripts)) if policy.disable_ipv6 else scripts)

    def remove(self) -> None:
        """Remove exactly what is ours; nothing to do when this variant is not installed."""
        if self.runner.which(iptables.save_argv(self.backend, 4)[0]) is None:
            return
        v4, v6 = self._saves()
        self._run(iptables.teardown(variant=self.backend, saved_v4=v4, saved_v6=v6))

    def tables_exist(self) -> bool:
        """Any table of this variant exists (without loading kernel modules to find out)."""
        if self.backend is Backend.IPTABLES_LEGACY:
            return bool(self._legacy_names().strip())
        if self.runner.which("nft") is None:
            return False
        out = self.runner.run(["nft", "list", "tables"], check=False, timeout=10).stdout
        return any(f"table {fam} " in out for fam in ("ip", "ip6"))

    def may_hold_ours(self) -> bool:
        """Cheap evidence that rules of ours could be here (skips needless saves in `stop`)."""
        if self.backend is Backend.IPTABLES_LEGACY:
            return bool(self._legacy_names().strip())
        if self.runner.which("nft") is None:
            return True
        tables = self.runner.run(["nft", "list", "tables"], check=False).stdout
        return any(f"table {fam} {t}" in tables for fam in ("ip", "ip6")
                   for t in ("filter", "nat"))

    def _legacy_names(self) -> str:
        names = ""
        for name in ("ip_tables_names", "ip6_tables_names"):
            try:
                names += (self.proc_net / name).read_text()
            except OSError:
                continue
        return names

    def present(self) -> bool:
        try:
            v4, v6 = self._saves()
        except (CommandFailed, MissingTool):
            return False
        return bool(iptables.teardown(variant=self.backend, saved_v4=v4, saved_v6=v6))

    def counters(self) -> dict[str, dict[str, int]]:
        v4, v6 = self._saves(counters=True)
        return iptables.parse_counters(v4, v6)

    def listing(self) -> str:
        """Our chains and marked rules as iptables-save prints them, normalised."""
        return _ours(*self._saves())

    def expected(self, policy: Policy) -> str:
        """What `listing` would show for this policy, restored in a throwaway namespace."""
        self.runner.require("unshare")
        scripts = self.render(policy, fresh=True)
        saved = []
        for family in (4, 6):
            script = next(s for s in scripts
                          if s.argv[0].startswith("ip6" if family == 6 else "ipt"))
            save = " ".join(iptables.save_argv(self.backend, family))
            # Fixed argv, no user input in the shell text: restore then save in one namespace.
            out = self.runner.run(
                ["unshare", "--net", "sh", "-c", f"{' '.join(script.argv)} && {save}"],
                input=script.text,
            ).stdout
            saved.append(out)
        return _ours(saved[0], saved[1])

    def absent_builtins(self) -> tuple[str, ...]:
        """iptables-nft tables/chains that do not exist yet (so that `stop` may remove them)."""
        if self.backend is not Backend.IPTABLES_NFT or self.runner.which("nft") is None:
            return ()
        present = _nft_objects(self.runner)
        wanted = [f"{f} {t}" for f, t in _BUILTIN] + [
            f"{f} {t} {c}" for (f, t), chains in _BUILTIN.items() for c in chains
        ]
        return tuple(w for w in wanted if w not in present)


def _ours(v4: str, v6: str) -> str:
    keep = []
    for family, text in (("ipv4", v4), ("ipv6", v6)):
        keep += [f"{family} {line}" for line in normalise(text).splitlines()
                 if iptables.ours_line(line)]
    return "\n".join(keep) + "\n"


# iptables-nft creates the built-in chains (and tables) that a rule needs on first use, and
# nothing removes them afterwards. `start` records which did not exist before it; `stop`
# deletes those of them that are empty again, so `nft list ruleset` is as it was.
_BUILTIN = {
    ("ip", "filter"): ("INPUT", "FORWARD", "OUTPUT"),
    ("ip", "nat"): ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    ("ip6", "filter"): ("INPUT", "FORWARD", "OUTPUT"),
}


def _nft_objects(runner: system.Runner) -> dict[str, int]:
    """{"ip filter": n_chains, "ip filter INPUT": n_rules, …} for iptables-nft's tables."""
    out = runner.run(["nft", "-j", "list", "ruleset"]).stdout
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


def remove_created(created: list[str], runner: system.Runner = system.HOST) -> list[Error]:
    """Delete the recorded tables/chains that are empty now (someone else's rules keep them)."""
    if not created or runner.which("nft") is None:
        return []
    failures: list[Error] = []
    present = _nft_objects(runner)
    for chain in (c for c in created if c.count(" ") == 2 and present.get(c) == 0):
        fam, table, name = chain.split(" ")
        try:
            runner.run(["nft", "delete", "chain", fam, table, name])
        except Error as exc:
            failures.append(exc)
    present = _nft_objects(runner)
    for table in (c for c in created if c.count(" ") == 1 and present.get(c) == 0):
        fam, name = table.split(" ")
        try:
            runner.run(["nft", "delete", "table", fam, name])
        except Error as exc:
            failures.append(exc)
    return failures
