"""The error types library code raises, and the exit statuses the CLI maps them to."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from enum import IntEnum


class ExitStatus(IntEnum):
    OK = 0
    FAILURE = 1
    USAGE = 2
    CONFIG = 3
    PERMISSION = 4
    MISSING_TOOL = 5
    STATE = 6
    TOR = 7
    INTERRUPTED = 130


class Error(Exception):
    """A failure the user can act on: one-line message plus an optional hint."""

    status: ExitStatus = ExitStatus.FAILURE

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class ConfigError(Error):
    status = ExitStatus.CONFIG


class PermissionError_(Error):
    status = ExitStatus.PERMISSION


class MissingTool(Error):
    status = ExitStatus.MISSING_TOOL


class StateError(Error):
    status = ExitStatus.STATE


class TorError(Error):
    status = ExitStatus.TOR


class CommandFailed(Error):
    """A subprocess exited non-zero; rendered as a command the user can copy."""

    def __init__(
        self, argv: Sequence[str], returncode: int, stderr: str, hint: str | None = None
    ) -> None:
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stderr = stderr.strip()
        first = self.stderr.splitlines()[0] if self.stderr else ""
        super().__init__(
            f"command failed (exit {returncode}): {shlex.join(self.argv)}"
            + (f": {first}" if first else ""),
            hint,
        )


class CleanupFailed(Error):
    """Several cleanup steps failed; every one is reported."""

    def __init__(self, failures: Sequence[Error]) -> None:
        self.failures = tuple(failures)
        super().__init__(
            "; ".join(f.message for f in self.failures),
            "run `netspectre stop` again; it is safe to repeat",
        )
