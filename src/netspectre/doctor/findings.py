"""A doctor finding (one check: ok, failed or skipped, in plain words, with its fix). Pure."""

from __future__ import annotations

from collections.abc import Iterable

from netspectre.findings import Finding

SUDO_DOCTOR = "sudo netspectre doctor"

# Package managers in the order we prefer them, with the command that installs a package.
PACKAGE_MANAGERS = (
    ("apt-get", "sudo apt install {}"),
    ("dnf", "sudo dnf install {}"),
    ("pacman", "sudo pacman -S {}"),
    ("zypper", "sudo zypper install {}"),
    ("apk", "sudo apk add {}"),
)


def needs_root(check: str, what: str) -> Finding:
    return Finding(check, None, f"not root: {what}", SUDO_DOCTOR)


def install(package: str, managers: Iterable[str]) -> str:
    """The install command for the package manager found (`managers`: names on PATH)."""
    found = set(managers)
    commands = [cmd.format(package) for name, cmd in PACKAGE_MANAGERS if name in found]
    if commands:
        return commands[0]
    return " / ".join(cmd.format(package) for _, cmd in PACKAGE_MANAGERS[:3])
