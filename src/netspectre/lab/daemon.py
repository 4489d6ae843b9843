"""Turn the lab's small Python servers into daemons with a pid file, so the one blocking
`system.run` can start them: the launcher exits once the sockets are bound and the pid is
written, and errors (address in use) surface as its exit status.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from netspectre.proc import write_pid


def detach(*, pidfile: Path, log: Path) -> None:
    """Double-fork; return in the grandchild only. Call after binding the sockets."""
    sys.stdout.flush()
    sys.stderr.flush()
    if os.fork() > 0:
        _, status = os.wait()
        os._exit(os.waitstatus_to_exitcode(status))
    os.setsid()
    child = os.fork()
    if child > 0:
        write_pid(pidfile, child)
        os._exit(0)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.close(null)
