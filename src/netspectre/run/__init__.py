"""`netspectre run -- CMD`: one program through Tor, without root where the kernel allows it.

The program runs in its own user, network, mount and PID namespaces. Its network namespace has
only `lo`; policy routing sends TCP and DNS to `lo` and nothing else anywhere (ENETUNREACH),
and an nft table redirects them to listening sockets that the sandbox hands, over a Unix
socket, to the relay outside (`relay.py`). The relay speaks SOCKS5 to Tor with credentials of
its own, so Tor gives the run its own circuits.

Rooms: `linux.py` (the syscalls ctypes reaches), `netsetup.py` (pure: the namespace's routes,
rules and files), `sandbox.py` (the child side), `relay.py` + `dnsanswer.py` (the parent
side), `commands/run.py` (the command).
"""
