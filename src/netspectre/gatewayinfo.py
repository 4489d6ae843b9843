"""What `status`, `verify` and `doctor` say about [gateway] (issue 11): its interfaces as
the kernel has them now, and the findings about them. Reads /sys and /proc; changes nothing."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from netspectre.findings import Finding

SYS_NET = Path("/sys/class/net")
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
RESTART = "sudo netspectre restart"


def recorded(policy: Mapping[str, object]) -> Mapping[str, object] | None:
    """The gateway in a recorded policy summary (None: the policy has none)."""
    gw = policy.get("gateway")
    return gw if isinstance(gw, Mapping) else None


def _names(gw: Mapping[str, object]) -> list[str]:
    raw = gw.get("interfaces")
    return [str(n) for n in raw] if isinstance(raw, list) else []


def status(policy: Mapping[str, object], sys_net: Path = SYS_NET,
           ip_forward: Path = IP_FORWARD) -> dict[str, object]:
    """{} without a gateway; else its interfaces (present or not), ports and ip_forward."""
    gw = recorded(policy)
    if gw is None:
        return {}
    try:
        forward: str | None = ip_forward.read_text().strip()
    except OSError:
        forward = None
    return {"interfaces": {n: (sys_net / n).exists() for n in _names(gw)},
            "trans_port": gw.get("trans_port"), "dns_port": gw.get("dns_port"),
            "ip_forward": forward}


def findings(info: Mapping[str, object]) -> list[Finding]:
    """A missing interface is not an error (it is covered when it appears): it is said."""
    if not info:
        return []
    present = info.get("interfaces")
    present = present if isinstance(present, Mapping) else {}
    missing = [n for n, here in present.items() if not here]
    here = [n for n, ok in present.items() if ok]
    return [
        Finding("gateway interfaces present", None if missing else True,
                ("present: " + (", ".join(here) or "none")
                 + ("; absent (covered as soon as they appear): " + ", ".join(missing)
                    if missing else "")), ""),
        Finding("gateway forwarding refused", True,
                f"net.ipv4.ip_forward = {info.get('ip_forward')}: its clients' TCP and DNS go "
                "to Tor, the rest is rejected, nothing is forwarded (netspectre never sets it)"),
    ]


def text(info: Mapping[str, object]) -> list[str]:
    """The status lines (cli_text)."""
    if not info:
        return []
    present = info.get("interfaces")
    present = present if isinstance(present, Mapping) else {}
    names = ", ".join(f"{n} ({'present' if ok else 'absent'})" for n, ok in present.items())
    return [f"  gateway: {names}; TCP → :{info.get('trans_port')}, DNS → "
            f":{info.get('dns_port')}; ip_forward {info.get('ip_forward')}"]
