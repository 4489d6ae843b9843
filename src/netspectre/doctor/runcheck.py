"""`netspectre run`'s prerequisites: unprivileged user namespaces (else it needs sudo), nft
(it loads the namespace's table)."""

from __future__ import annotations

from netspectre import system
from netspectre.findings import Finding
from netspectre.run import userns

CHECK = "netspectre run"


def findings(fix: str | None, nft: str | None) -> list[Finding]:
    """fix: userns.blocked(); nft: where `nft` is (None: missing)."""
    out = [Finding(CHECK, None, "unprivileged user namespaces are off: `netspectre run` "
                   "needs sudo on this machine", fix) if fix else
           Finding(CHECK, True, "unprivileged user namespaces allowed: `netspectre run` "
                   "works without root")]
    if nft is None:
        out.append(Finding(CHECK, False, "`nft` not found: `netspectre run` loads its "
                           "namespace's table with it", system.INSTALL_HINTS["nft"]))
    return out


def gather() -> list[Finding]:
    return findings(userns.blocked(), system.find_tool("nft"))
