"""The versioned State record under the runtime dir: atomic writes, a lock for `start`/`stop`."""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from netspectre import fsutil
from netspectre.backends import Backend
from netspectre.config import TorConfig, TorMode
from netspectre.errors import StateError
from netspectre.tor.record import Endpoints, TorRecord

VERSION = 1


class Phase(StrEnum):
    APPLYING = "applying"  # intent recorded; rules/sysctls may be partly in force
    ACTIVE = "active"
    STOPPING = "stopping"


@dataclass(frozen=True)
class State:
    phase: Phase
    backend: Backend
    since: float
    boot_id: str
    sysctls: dict[str, str] = field(default_factory=dict)  # values to restore
    policy: dict[str, Any] = field(default_factory=dict)  # Policy.summary() of the plan
    config_path: str | None = None
    tor: TorRecord | None = None
    created: list[str] = field(default_factory=list)  # iptables-nft built-ins we may create
    ipv6_config: dict[str, Any] = field(default_factory=dict)  # static addrs/routes to re-add
    plan_digest: str = ""  # Plan.digest() of what is in force: `status` compares the config
    guard_pid: int | None = None  # the raw guard's watcher (`netspectre _guard`), when on
    # False: `start --no-firewall`, Tor only (issue 10): no ruleset, no sysctl, nothing but
    # the tor we run; `backend` is then only what a full start would use, never in force.
    # Absent in older files: they were all full starts.
    firewall: bool = True
    version: int = VERSION

    def with_(self, **changes: Any) -> State:
        return replace(self, **changes)

    def to_json(self) -> str:
        data = asdict(self)
        data["phase"] = self.phase.value
        data["backend"] = self.backend.value
        data["tor"] = self.tor.to_json() if self.tor is not None else None
        return json.dumps(data, indent=2, sort_keys=True) + "\n"


def from_json(text: str, *, path: str = "state") -> State:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StateError(
            f"{path}: corrupt state file ({exc})",
            "run `netspectre stop --force`: it cleans what is ours even without state",
        ) from None
    if not isinstance(data, dict) or data.get("version") != VERSION:
        version = data.get("version") if isinstance(data, dict) else None
        raise StateError(
            f"{path}: unknown state version {version!r} (this netspectre knows {VERSION})",
            "stop with the netspectre version that started, or run `netspectre stop --force`",
        )
    try:
        policy = dict(data.get("policy", {}))
        tor = data.get("tor")
        return State(
            phase=Phase(data["phase"]),
            backend=Backend(data["backend"]),
            since=float(data["since"]),
            boot_id=str(data["boot_id"]),
            sysctls={str(k): str(v) for k, v in data.get("sysctls", {}).items()},
            policy=policy,
            config_path=data.get("config_path"),
            tor=TorRecord.from_json(tor, fallback=_fallback(policy, tor))
            if isinstance(tor, dict) else None,
            created=[str(c) for c in data.get("created", [])],
            ipv6_config=dict(data.get("ipv6_config", {})),
            plan_digest=str(data.get("plan_digest", "")),
            guard_pid=int(data["guard_pid"]) if data.get("guard_pid") else None,
            firewall=bool(data.get("firewall", True)),
        )
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise StateError(
            f"{path}: malformed state file ({exc!r})",
            "run `netspectre stop --force`: it cleans what is ours even without state",
        ) from None


def _fallback(policy: dict[str, Any], tor: dict[str, Any]) -> Endpoints:
    """Endpoints for a tor record written before they were recorded: the policy's ports."""
    d = TorConfig()
    return Endpoints(mode=TorMode(tor.get("mode", d.mode.value)),
                     trans_port=int(policy.get("trans_port", d.trans_port)),
                     dns_port=int(policy.get("dns_port", d.dns_port)),
                     socks_port=d.socks_port, control=d.control)


def save_endpoints(path: Path, record: State) -> None:
    """The world-readable copy of where the Tor in force listens (paths.endpoints, 0644), for
    an unprivileged `netspectre run`: ports and mode only. The state itself stays root's: it
    holds the torrc, whose Bridge lines (a private bridge's address) are a secret."""
    if record.tor is None:
        return
    e = record.tor.endpoints
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o755)
    fsutil.write_atomic(path, json.dumps({
        "version": VERSION, "boot_id": record.boot_id, "since": record.since,
        "firewall": record.firewall, "mode": e.mode.value, "trans_port": e.trans_port,
        "dns_port": e.dns_port, "socks_port": e.socks_port,
    }, indent=2, sort_keys=True) + "\n", mode=0o644)


def load_endpoints(path: Path) -> tuple[Endpoints, bool] | None:
    """(endpoints, firewall in force) from paths.endpoints, readable by anyone; None when
    nothing is published for this boot (netspectre not active)."""
    try:
        data = json.loads(path.read_text())
        if data.get("version") != VERSION or data.get("boot_id") != boot_id():
            return None
        d = TorConfig()
        return Endpoints(mode=TorMode(data["mode"]), trans_port=int(data["trans_port"]),
                         dns_port=int(data["dns_port"]), socks_port=int(data["socks_port"]),
                         control=d.control), bool(data["firewall"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise StateError(f"{path}: unreadable ({exc})", "run `sudo netspectre restart`") from None


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def ensure_dir(run: Path) -> None:
    run.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = run.stat()
    if st.st_uid != 0 and os.geteuid() == 0:
        raise StateError(f"{run} is not owned by root", f"remove {run} and try again")
    if st.st_mode & 0o077:
        os.chmod(run, 0o700)


def load(path: Path) -> State | None:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    return from_json(text, path=str(path))


def save(path: Path, state: State) -> None:
    _write(path, state.to_json())


def save_lockdown(path: Path, reason: str, since: float) -> None:
    """The boot lockdown marker (paths.lockdown): `start --boot` failed, the ruleset holds."""
    _write(path, json.dumps({"reason": reason, "since": since}) + "\n")


def load_lockdown(path: Path) -> dict[str, Any] | None:
    """The marker's content, None if there is none; StateError if it is unreadable."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StateError(f"{path}: unreadable lockdown marker ({exc})",
                         "run `netspectre stop` (it removes the marker)") from None
    if not isinstance(data, dict):
        raise StateError(f"{path}: lockdown marker is not a JSON object",
                         "run `netspectre stop` (it removes the marker)")
    return data


def _write(path: Path, text: str) -> None:
    fsutil.write_atomic(path, text, mode=0o600)


def remove(path: Path) -> None:
    """Remove the state file and any temp file a killed `save` left beside it."""
    fsutil.remove_with_temps(path)


@contextmanager
def locked(lock_path: Path, *, wait: bool = False) -> Iterator[None]:
    """Exclusive lock: two `start`s (or a `start` and a `stop`) never interleave."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise StateError(
                "another netspectre command is running (lock held)",
                f"wait for it to finish; the lock is {lock_path}",
            ) from None
        yield
    finally:
        os.close(fd)


def load_current(path: Path) -> State | None:
    """State of this boot, or None; a state file from before a reboot describes nothing live."""
    current = load(path)
    if current is not None and current.boot_id != boot_id():
        remove(path)
        return None
    return current
