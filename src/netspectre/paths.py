"""Where netspectre keeps runtime state and Tor's data, per network namespace.

Firewall rules and sysctls belong to a network namespace, so their state does too: in the
host's namespace state lives in /run/netspectre; in any other (the lab's client, a test's
namespace) in /run/netspectre/netns-<inode>, so each one is started and stopped on its own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

RUN_ROOT = Path("/run/netspectre")
# Tor's own runtime dir (control socket, cookie) must be reachable by the tor account; it sits
# beside RUN_ROOT so that RUN_ROOT itself (state, lock, torrc, pid files) stays root's, 0700.
TOR_RUN_ROOT = Path("/run/netspectre-tor")
LIB_ROOT = Path("/var/lib/netspectre")
# World-readable (0755): what an unprivileged `netspectre run` may know (endpoints.json).
PUBLIC_ROOT = Path("/run/netspectre-public")


def netns_suffix() -> str:
    """"" in the host's namespace; "netns-<name>" in one made by `ip netns add`."""
    try:
        mine = os.stat("/proc/self/ns/net")
    except OSError:
        return ""
    try:
        named = sorted(os.scandir("/run/netns"), key=lambda e: e.name)
    except OSError:
        named = []
    for entry in named:
        try:
            st = os.stat(entry.path)
        except OSError:
            continue
        if (st.st_ino, st.st_dev) == (mine.st_ino, mine.st_dev):
            return f"netns-{entry.name}"
    try:
        init = os.stat("/proc/1/ns/net")
    except OSError:  # pid 1 hidden from us (a sandbox): an unnamed namespace counts as the host
        return ""
    return "" if init.st_ino == mine.st_ino else f"netns-{mine.st_ino}"


@dataclass(frozen=True)
class Paths:
    run: Path  # state.json, lock, torrc, pid files (root, 0700)
    lib: Path  # tor's DataDirectory parent (kept across starts: warm bootstrap)
    daemon: Path  # owned by the tor account: control socket, cookie, notice log

    @property
    def state(self) -> Path:
        return self.run / "state.json"

    @property
    def lock(self) -> Path:
        return self.run / "lock"

    @property
    def lockdown(self) -> Path:
        """JSON {"reason", "since"}: `start --boot` failed and blocked everything but loopback."""
        return self.run / "lockdown.json"

    @property
    def public(self) -> Path:
        """Beside run, readable by anyone: /run/netspectre-public/{host,netns-…}."""
        if self.run == RUN_ROOT:
            return PUBLIC_ROOT / "host"
        if self.run.parent == RUN_ROOT:
            return PUBLIC_ROOT / self.run.name
        return Path(f"{self.run}-public")

    @property
    def endpoints(self) -> Path:
        """JSON {mode, trans_port, dns_port, socks_port, firewall, boot_id, since}, 0644."""
        return self.public / "endpoints.json"

    @property
    def tor_run(self) -> Path:
        return self.run / "tor"

    @property
    def tor_data(self) -> Path:
        return self.lib / "tor"


def detect() -> Paths:
    return for_suffix(netns_suffix())


def for_namespace(name: str) -> Paths:
    """netspectre's directories as `detect()` sees them inside the `ip netns` namespace name."""
    return for_suffix(f"netns-{name}")


def for_suffix(suffix: str) -> Paths:
    run = Path(os.environ.get("NETSPECTRE_RUN_DIR", RUN_ROOT / suffix if suffix else RUN_ROOT))
    lib = Path(os.environ.get("NETSPECTRE_LIB_DIR", LIB_ROOT / suffix if suffix else LIB_ROOT))
    daemon = Path(os.environ.get(
        "NETSPECTRE_TOR_DIR",
        f"{run}-tor" if "NETSPECTRE_RUN_DIR" in os.environ else TOR_RUN_ROOT / (suffix or "host"),
    ))
    return Paths(run=run, lib=lib, daemon=daemon)
