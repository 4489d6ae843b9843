"""Whether this kernel lets an unprivileged user create user namespaces (`run` without root),
and the fix when it does not. Reads /proc only."""

from __future__ import annotations

from collections.abc import Sequence

FALLBACK = "run: sudo netspectre run -- CMD"
KNOBS = (
    ("/proc/sys/kernel/unprivileged_userns_clone", "0",
     "Debian forbids unprivileged user namespaces here: "
     "sudo sysctl kernel.unprivileged_userns_clone=1, or run: sudo netspectre run -- CMD"),
    ("/proc/sys/kernel/apparmor_restrict_unprivileged_userns", "1",
     "AppArmor restricts unprivileged user namespaces (Ubuntu 23.10+): "
     "run: sudo netspectre run -- CMD, or allow netspectre in an AppArmor profile"),
    ("/proc/sys/user/max_user_namespaces", "0",
     "user namespaces are disabled: sudo sysctl user.max_user_namespaces=15000, "
     "or run: sudo netspectre run -- CMD"),
)


def blocked(knobs: Sequence[tuple[str, str, str]] = KNOBS) -> str | None:
    """The fix for the first knob that forbids unprivileged user namespaces, None if none."""
    for path, bad, fix in knobs:
        try:
            with open(path) as f:
                if f.read().strip() == bad:
                    return fix
        except OSError:
            continue
    return None


def hint(knobs: Sequence[tuple[str, str, str]] = KNOBS) -> str:
    return blocked(knobs) or FALLBACK
