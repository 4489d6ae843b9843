"""The lab: a private Tor network in network namespaces, with a client machine to run
netspectre in, a guest routed through it, a web server, DNS and an onion service. Offline:
only documentation (TEST-NET) addresses, nothing routed to the host.
"""

from __future__ import annotations

from netspectre.lab.info import LabInfo, client_config, client_torrc_lines, load
from netspectre.lab.lifecycle import down, shell_argv, status, up, wait_onion
from netspectre.lab.spec import LabSpec, Layout, from_mapping, layout, validate

__all__ = [
    "LabInfo",
    "LabSpec",
    "Layout",
    "client_config",
    "client_torrc_lines",
    "down",
    "from_mapping",
    "layout",
    "load",
    "shell_argv",
    "status",
    "up",
    "validate",
    "wait_onion",
]
