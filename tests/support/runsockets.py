"""Stand-ins for the daemons that resolve names outside a network namespace, then a probe of
them from outside and from inside `netspectre run`. Runs as root in a private mount namespace
(`unshare -m`) of a test network namespace: /run there is a tmpfs of its own.

argv: the `netspectre run` command line (without the program). Prints one JSON object:
{"direct": [...], "inside": [...], "direct_accepted": {path: count}, "from_sandbox": {...}}.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time

PY = "/usr/bin/python3"
PATHS = ("/run/systemd/resolve/io.systemd.Resolve", "/run/nscd/socket",
         "/run/avahi-daemon/socket", "/run/dbus/system_bus_socket")
accepted = dict.fromkeys(PATHS, 0)
from_sandbox = dict.fromkeys(PATHS, 0)  # peers in another PID namespace than ours: the run's
OUR_PID_NS = os.stat("/proc/self/ns/pid").st_ino


def serve(path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.chmod(os.path.dirname(path), 0o755)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    os.chmod(path, 0o777)
    s.listen()
    while True:
        conn, _ = s.accept()
        accepted[path] += 1
        pid, _uid, _gid = struct.unpack("3i", conn.getsockopt(
            socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
        try:
            if os.stat(f"/proc/{pid}/ns/pid").st_ino != OUR_PID_NS:
                from_sandbox[path] += 1
        except OSError:
            from_sandbox[path] += 1  # gone already: count it against the sandbox
        conn.close()


def probe(prefix: list[str]) -> list[dict[str, object]]:
    here = os.path.dirname(os.path.abspath(__file__))
    argv = [*prefix, PY, os.path.join(here, "runprobe.py"), *(f"unix:{p}" for p in PATHS)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise SystemExit(f"{argv} failed: {done.stderr}")
    return [json.loads(line) for line in done.stdout.splitlines()]


def main(run_argv: list[str]) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/run"], check=True)
    for path in PATHS:
        threading.Thread(target=serve, args=(path,), daemon=True).start()
    while not all(os.path.exists(p) for p in PATHS):
        threading.Event().wait(0.01)
    nobody = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]
    direct = probe(nobody)
    deadline = time.monotonic() + 5  # the accepting threads count after connect() returned
    while not all(accepted.values()) and time.monotonic() < deadline:
        time.sleep(0.01)
    before = dict(accepted)
    inside = probe(run_argv)
    print(json.dumps({"direct": direct, "inside": inside, "direct_accepted": before,
                      "from_sandbox": from_sandbox}))


if __name__ == "__main__":
    main(sys.argv[1:])
