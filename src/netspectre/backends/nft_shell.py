"""The nftables firewall: our one table, applied and read back through a Runner (shell)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from netspectre import system
from netspectre.backends import guard, nft, nft_probe
from netspectre.backends.names import TABLE, Backend
from netspectre.backends.script import Script, normalise

if TYPE_CHECKING:
    from netspectre.policy import Policy


class NftFirewall:
    """`table inet netspectre`: replaced in one transaction, deleted in one."""

    backend = Backend.NFT

    def __init__(self, runner: system.Runner = system.HOST,
                 exists: Callable[[], bool | None] | None = None,
                 guard_exists: Callable[[], bool | None] | None = None) -> None:
        self.runner = runner
        # Is our table in the kernel? (None: cannot tell.) Asked over netlink on the real
        # host; a fake runner is a fake kernel, so there the answer is "cannot tell".
        self.exists = exists or (
            (lambda: nft_probe.table_exists("inet", TABLE)) if runner is system.HOST
            else (lambda: None))
        self.guard_exists: Callable[[], bool | None] = guard_exists or (
            (lambda: nft_probe.table_exists("netdev", guard.TABLE)) if runner is system.HOST
            else (lambda: None))

    def __repr__(self) -> str:
        return "NftFirewall()"

    def render(self, policy: Policy, *, fresh: bool = False) -> tuple[Script, ...]:
        """The script `apply` commits; the same on any system (the table replaces itself)."""
        return nft.render(policy)

    def apply(self, policy: Policy) -> None:
        """One transaction (the inet table and the guard's netdev table commit together);
        without a replace preamble for a table the kernel says is not there (fresh starts: the
        same rules, 13-20 ms sooner)."""
        for script in nft.render(policy, replace=self.exists() is not False,
                                 replace_guard=self._guard_may_exist()):
            self.runner.run(script.argv, input=script.text)

    def apply_guard(self, policy: Policy) -> None:
        """Re-commit only `table netdev netspectre` (the guard's watcher: new interfaces)."""
        for script in nft.render_guard(policy):
            self.runner.run(script.argv, input=script.text)

    def _guard_may_exist(self) -> bool:
        found = self.guard_exists()
        if found is None:  # cannot ask over netlink: ask nft
            return self.guard_present()
        return found

    def guard_present(self) -> bool:
        if self.runner.which("nft") is None:
            return False
        return self.runner.run(["nft", "list", "table", "netdev", guard.TABLE],
                               check=False).returncode == 0

    def guard_listing(self) -> str:
        """`table netdev netspectre` as the kernel reports it, normalised; "" when absent."""
        proc = self.runner.run(["nft", "list", "table", "netdev", guard.TABLE], check=False)
        return normalise(proc.stdout) if proc.returncode == 0 else ""

    def remove(self) -> None:
        """Delete our table; nothing to do when nft is not installed."""
        if self.runner.which("nft") is None:
            return
        inet, netdev = nft.teardown()
        self.runner.run(inet.argv, input=inet.text)
        if self._guard_may_exist():
            self.runner.run(netdev.argv, input=netdev.text)

    def may_hold_ours(self) -> bool:
        return True  # asking is as cheap as guessing

    def present(self) -> bool:
        """The protecting table is in force. The guard's netdev table alone protects nothing
        (it passes marked packets, and only our inet table marks): it does not count."""
        if self.runner.which("nft") is None:
            return False
        return self.runner.run(["nft", "list", "table", "inet", TABLE],
                               check=False).returncode == 0

    def counters(self) -> dict[str, dict[str, int]]:
        out = self.runner.run(["nft", "-j", "list", "counters", "table", "inet", TABLE]).stdout
        found = nft.parse_counters(out)
        raw = self.runner.run(["nft", "-j", "list", "counters", "table", "netdev", guard.TABLE],
                              check=False)
        if raw.returncode == 0:
            found.update(nft.parse_counters(raw.stdout))
        return found

    def listing(self) -> str:
        """Our tables as the kernel reports them, normalised; "" when neither exists."""
        proc = self.runner.run(["nft", "list", "table", "inet", TABLE], check=False)
        inet = normalise(proc.stdout) if proc.returncode == 0 else ""
        netdev = self.guard_listing()
        return inet + netdev if inet or netdev else ""

    def expected(self, policy: Policy) -> str:
        """What `listing` would show for this policy, loaded in a throwaway namespace."""
        self.runner.require("unshare")
        # Listed by a second nft: inside the loading batch, sets print as raw interval ends.
        out = self.runner.run(
            ["unshare", "--net", "sh", "-c", f"nft -f - && nft list table inet {TABLE}"
             + (f" && nft list table netdev {guard.TABLE}" if policy.raw_guard else "")],
            input=nft.render(policy)[0].text,
        ).stdout
        return normalise(out)

    def absent_builtins(self) -> tuple[str, ...]:
        return ()  # our table is all there is: nothing is created on the side
