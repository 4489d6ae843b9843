"""Files written so that a reader (or a crash) never sees half of them: the one atomic write."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(
    path: Path | str, data: str | bytes, *, mode: int = 0o600, owner: tuple[int, int] | None = None,
    sync: bool = True,
) -> None:
    """Temp file in the same directory, fsync, rename over path, fsync the directory.

    owner (uid, gid) is set on the temp file before the rename, so the final name never
    exists with the wrong owner. O_NOFOLLOW: a planted symlink at the temp name is refused.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    payload = data.encode() if isinstance(data, str) else data
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        os.write(fd, payload)
        if owner is not None:
            os.fchown(fd, *owner)
        os.fchmod(fd, mode)  # the umask narrowed os.open's mode
        if sync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)
    if sync:
        dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def remove_with_temps(path: Path) -> None:
    """Remove path and any temp file a killed write_atomic left beside it."""
    for stale in (path, *path.parent.glob(f".{path.name}.*.tmp")):
        stale.unlink(missing_ok=True)
