"""What a program inside `netspectre run` tries, one JSON line per step (stdlib only: it runs
with the system's python3 as an unprivileged user).

Steps (argv): tcp:HOST:PORT  udp:HOST:PORT  resolve:NAME  raw  packet  ping  caps  uid
unix:PATH  ptrace:PID  http:HOST (GET /api/ip, the lab's web server)  hold:HOST:SECONDS (GET /api/ip
on a kept-alive connection, report, then keep it open) (IPv6 hosts in brackets).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time


def _split(arg: str) -> tuple[str, int]:
    host, _, port = arg.rpartition(":")
    return host.strip("[]"), int(port)


def step(spec: str) -> dict[str, object]:
    kind, _, arg = spec.partition(":")
    t0 = time.monotonic()
    out: dict[str, object] = {"step": spec}
    try:
        if kind == "tcp":
            host, port = _split(arg)
            with socket.create_connection((host, port), timeout=5) as s:
                out["banner"] = s.recv(200).decode().strip()
        elif kind == "udp":
            host, port = _split(arg)
            fam = socket.AF_INET6 if ":" in host else socket.AF_INET
            with socket.socket(fam, socket.SOCK_DGRAM) as s:
                s.sendto(b"netspectre-run-probe", (host, port))
        elif kind in ("http", "hold"):
            host, _, seconds = arg.partition(":") if kind == "hold" else (arg, "", "0")
            with socket.create_connection((host.strip("[]"), 80), timeout=60) as s:
                s.sendall(f"GET /api/ip HTTP/1.1\r\nHost: {host}\r\n"
                          f"Connection: keep-alive\r\n\r\n".encode())
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = s.recv(4096)
                    if not chunk:
                        raise ConnectionError("closed before a response")
                    head += chunk
                _, _, body = head.partition(b"\r\n\r\n")
                length = int(next((line.split(b":")[1] for line in head.split(b"\r\n")
                                   if line.lower().startswith(b"content-length:")), b"0"))
                while len(body) < length:
                    body += s.recv(65536)
                out["json"] = json.loads(body)
                if kind == "hold":
                    print(json.dumps({**out, "ok": True}), flush=True)
                    time.sleep(float(seconds))
        elif kind == "resolve":
            out["addresses"] = sorted({a[4][0] for a in socket.getaddrinfo(
                arg, 80, socket.AF_INET, socket.SOCK_STREAM)})
        elif kind == "raw":
            socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).close()
        elif kind == "packet":
            socket.socket(socket.AF_PACKET, socket.SOCK_RAW).close()
        elif kind == "ping":
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP).close()
        elif kind == "caps":
            out["caps"] = {line.split(":")[0]: line.split()[1] for line in
                           open("/proc/self/status") if line.startswith("Cap")}
        elif kind == "ptrace":  # PTRACE_ATTACH to a pid of this PID namespace
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            if libc.ptrace(16, int(arg), None, None) != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err))
            libc.ptrace(17, int(arg), None, None)  # PTRACE_DETACH
        elif kind == "uid":
            out["uid"], out["gid"] = os.getuid(), os.getgid()
        elif kind == "unix":
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(2)
                s.connect(arg)
        out["ok"] = True
    except OSError as exc:
        out["ok"], out["error"] = False, exc.strerror or str(exc)
        out["errno"] = exc.errno
    out["seconds"] = round(time.monotonic() - t0, 3)
    return out


if __name__ == "__main__":
    for s in sys.argv[1:]:
        print(json.dumps(step(s)), flush=True)
