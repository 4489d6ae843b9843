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

from netspectre.errors import StateError

VERSION = 1


class Phase(StrEnum):
    APPLYING = "applying"  # intent recorded; rules/sysctls may be partly in force
    ACTIVE = "active"
    STOPPING = "stopping"


@dataclass(frozen=True)
class State:
    phase: Phase
    backend: str
    since: float
    boot_id: str
    sysctls: dict[str, str] = field(default_factory=dict)  # values to restore
    policy: dict[str, Any] = field(default_factory=dict)
    config_path: str | None = None
    tor: dict[str, Any] | None = None
    created: list[str] = field(default_factory=list)  # iptables-nft built-ins we may create
    ipv6_config: dict[str, Any] = field(default_factory=dict)  # static addrs/routes to re-add
    version: int = VERSION

    def with_(self, **changes: Any) -> State:
        return replace(self, **changes)

    def to_json(self) -> str:
        data = asdict(self)
        data["phase"] = self.phase.value
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
        return State(
            phase=Phase(data["phase"]),
            backend=str(data["backend"]),
            since=float(data["since"]),
            boot_id=str(data["boot_id"]),
            sysctls={str(k): str(v) for k, v in data.get("sysctls", {}).items()},
            policy=dict(data.get("policy", {})),
            config_path=data.get("config_path"),
            tor=data.get("tor"),
            created=[str(c) for c in data.get("created", [])],
            ipv6_config=dict(data.get("ipv6_config", {})),
        )
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise StateError(
            f"{path}: malformed state file ({exc!r})",
            "run `netspectre stop --force`: it cleans what is ours even without state",
        ) from None


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
    """Write atomically: temp file in the same dir, fsync, rename, fsync the dir."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def remove(path: Path) -> None:
    """Remove the state file and any temp file a killed `save` left beside it."""
    for stale in (path, *path.parent.glob(f".{path.name}.*.tmp")):
        try:
            stale.unlink()
        except FileNotFoundError:
            pass


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
