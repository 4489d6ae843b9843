"""LabInfo: what `lab up` built (keys, onion address, timings), saved as <lab dir>/info.json so
status, shell and the demo find it again; and the client's netspectre configuration.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netspectre.errors import StateError
from netspectre.fsutil import write_atomic
from netspectre.lab import torrc
from netspectre.lab.spec import LabSpec, Layout, layout
from netspectre.lab.torrc import Authority

VERSION = 2  # 2: exits 2 by default, containers, the obfs4 bridge


@dataclass(frozen=True)
class LabInfo:
    spec: LabSpec
    layout: Layout
    authorities: tuple[Authority, ...]
    fingerprints: dict[str, str]  # nickname -> RSA fingerprint, every relay
    onion: str  # "<56 chars>.onion"
    timings: dict[str, float] = field(default_factory=dict)  # step -> seconds since up began
    # "obfs4 IP:PORT FINGERPRINT cert=… iat-mode=0" for `[tor] bridges`; "" when no obfs4
    # plugin is installed (the lab then runs no bridge)
    bridge_line: str = ""

    @property
    def dir(self) -> Path:
        return self.spec.dir

    @property
    def check_url(self) -> str:
        return f"http://{self.layout.web4}/api/ip"

    @property
    def onion_url(self) -> str:
        return f"http://{self.onion}/api/ip"

    @property
    def client_config_path(self) -> Path:
        return self.spec.dir / "client.toml"

    @property
    def exit_addresses(self) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]:
        return tuple(a for r in self.layout.exits for a in (r.v4, r.v6))

    @property
    def relay_addresses(self) -> tuple[ipaddress.IPv4Address, ...]:
        """Where a client of the lab may send packets: the relays' ORPorts."""
        return tuple(r.v4 for r in self.layout.relays)


def client_torrc_lines(info: LabInfo) -> list[str]:
    """Exactly the torrc lines a client of the private network needs; netspectre's managed tor
    gets them through `[tor] torrc_extra`."""
    return torrc.client_lines(info.authorities)


def _toml_str(s: str) -> str:
    return json.dumps(s)  # a JSON string is a valid TOML basic string


def client_config(info: LabInfo, *, backend: str | None = None,
                  bootstrap_timeout: int | None = None, bridge: bool = False) -> str:
    """netspectre's TOML configuration for the lab's client namespace; backend and
    bootstrap_timeout (the demo's) go into their own tables, never appended to the text.
    bridge: reach the network only through the lab's obfs4 bridge (`[tor] bridges`)."""
    lay = info.layout
    if bridge and not info.bridge_line:
        raise StateError("this lab has no obfs4 bridge", "apt install obfs4proxy, then "
                         "`netspectre lab down` and `lab up`")
    bridges = f"bridges = [{_toml_str(info.bridge_line)}]\n" if bridge else ""
    extra = ",\n".join(f"  {_toml_str(line)}" for line in client_torrc_lines(info))
    lan = ", ".join(_toml_str(str(n)) for n in lay.lan)
    timeout = "" if bootstrap_timeout is None else f"bootstrap_timeout = {bootstrap_timeout}\n"
    chosen = "" if backend is None else f"backend = {_toml_str(backend)}\n"
    return (
        "# netspectre in the lab's client namespace (written by `netspectre lab up`)\n"
        "[tor]\n"
        f"{timeout}"
        'mode = "managed"\n'
        f"{bridges}"
        f"torrc_extra = [\n{extra},\n]\n"
        "\n[check]\n"
        f"url = {_toml_str(info.check_url)}\n"
        "\n[verify]\n"
        "# `netspectre verify` probes an internet address nothing answers, and the LAN resolver\n"
        f"target4 = {_toml_str(str(lay.probe4))}\n"
        f"target6 = {_toml_str(str(lay.probe6))}\n"
        f"lan_dns = [{_toml_str(str(lay.resolver4))}]\n"
        "\n[firewall]\n"
        f"# the client's uplink and guest links stand in for a LAN ({lay.resolver4} answers DNS)\n"
        f"{chosen}"
        f"lan = [{lan}]\n"
    )


def _spec_dict(spec: LabSpec) -> dict[str, Any]:
    return {
        "prefix": spec.prefix,
        "internet4": str(spec.internet4),
        "lan4": str(spec.lan4),
        "internet6": str(spec.internet6),
        "lan6": str(spec.lan6),
        "middles": spec.middles,
        "exits": spec.exits,
        "containers": spec.containers,
        "run_root": str(spec.run_root),
    }


def to_json(info: LabInfo) -> str:
    return json.dumps(
        {
            "version": VERSION,
            "spec": _spec_dict(info.spec),
            "authorities": [
                {"nick": a.relay.nick, "v3ident": a.v3ident, "fingerprint": a.fingerprint}
                for a in info.authorities
            ],
            "fingerprints": info.fingerprints,
            "onion": info.onion,
            "bridge_line": info.bridge_line,
            "timings": info.timings,
        },
        indent=2,
    )


def from_json(text: str, spec: LabSpec) -> LabInfo:
    data = json.loads(text)
    if data.get("version") != VERSION:
        raise StateError(
            f"lab info has version {data.get('version')!r}, expected {VERSION}",
            "run `netspectre lab down` and `lab up` again",
        )
    if data["spec"] != _spec_dict(spec):
        raise StateError(
            "the running lab was built from other settings",
            "run `netspectre lab down` with the settings it was built from",
        )
    lay = layout(spec)
    by_nick = {r.nick: r for r in lay.authorities}
    auths = tuple(
        Authority(relay=by_nick[a["nick"]], v3ident=a["v3ident"], fingerprint=a["fingerprint"])
        for a in data["authorities"]
    )
    return LabInfo(
        spec=spec,
        layout=lay,
        authorities=auths,
        fingerprints=dict(data["fingerprints"]),
        onion=data["onion"],
        timings=dict(data["timings"]),
        bridge_line=str(data.get("bridge_line", "")),
    )


def save(info: LabInfo) -> None:
    write_atomic(info.dir / "info.json", to_json(info))
    write_atomic(info.client_config_path, client_config(info), mode=0o644)


def load(spec: LabSpec) -> LabInfo | None:
    try:
        text = (spec.dir / "info.json").read_text()
    except FileNotFoundError:
        return None
    return from_json(text, spec)
