"""IPv6 sysctls: which to change (pure), and reading/writing them under /proc/sys (shell)."""

from __future__ import annotations

from pathlib import Path

PROC = Path("/proc/sys")
IPV6_CONF = "net/ipv6/conf"


def ipv6_keys(interfaces: list[str]) -> list[str]:
    """`all` first (it rewrites every interface), then `default`, then each interface."""
    names = ["all", "default", *sorted(i for i in interfaces if i not in ("all", "default"))]
    return [f"{IPV6_CONF}/{name}/disable_ipv6" for name in names]


def desired(disable_ipv6: bool) -> dict[str, str]:
    if not disable_ipv6:
        return {}
    return {f"{IPV6_CONF}/all/disable_ipv6": "1", f"{IPV6_CONF}/default/disable_ipv6": "1"}


def restore_order(saved: dict[str, str]) -> list[tuple[str, str]]:
    """Put back `all` and `default` before per-interface values: writing `all` resets them."""
    def rank(key: str) -> tuple[int, str]:
        name = key.split("/")[-2]
        return ({"all": 0, "default": 1}.get(name, 2), key)

    return [(k, saved[k]) for k in sorted(saved, key=rank)]


# --- shell ---------------------------------------------------------------------------------


def interfaces() -> list[str]:
    base = PROC / IPV6_CONF
    try:
        return sorted(p.name for p in base.iterdir())
    except FileNotFoundError:  # IPv6 compiled out or disabled at boot (ipv6.disable=1)
        return []


def read(keys: list[str]) -> dict[str, str]:
    values = {}
    for key in keys:
        try:
            values[key] = (PROC / key).read_text().strip()
        except FileNotFoundError:
            continue
    return values


def write(key: str, value: str) -> None:
    path = PROC / key
    try:
        path.write_text(value + "\n")
    except FileNotFoundError:
        return  # interface gone since we saved it: nothing to restore
