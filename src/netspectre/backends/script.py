"""What renderers return (a command and the text it commits) and how the kernel's listing of
it is normalised for comparison. Pure."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Script:
    """One atomic unit: `argv` reads `text` on stdin and commits it in one transaction."""

    argv: tuple[str, ...]
    text: str


def normalise(listing: str) -> str:
    """A kernel listing without what changes at run time (counter values, handles, comments)."""
    lines = []
    for line in listing.splitlines():
        line = re.sub(r"packets \d+ bytes \d+", "", line)
        line = re.sub(r"\[\d+:\d+\]", "[0:0]", line)
        line = re.sub(r"\s+# handle \d+", "", line).rstrip()
        if line.startswith("#") or not line.strip():
            continue
        lines.append(line)
    return "\n".join(lines) + "\n"
