"""`netspectre lab ACTION`: what cli.py's dispatcher calls. Formats results into text and data
for cli's Output (which does the printing); `shell` replaces the process with a shell.
"""

from __future__ import annotations

import os
from typing import Any, Protocol

from netspectre.errors import Error
from netspectre.lab import lifecycle
from netspectre.lab.info import LabInfo
from netspectre.lab.spec import LabSpec


class Output(Protocol):
    json: bool

    def report(self, data: dict[str, Any], text: str) -> None: ...

    def event(self, ev: Any) -> None: ...


def up_summary(info: LabInfo) -> dict[str, Any]:
    lay = info.layout
    return {
        "namespaces": {"internet": info.spec.inet_ns, "client": info.spec.client_ns,
                       "guest": info.spec.guest_ns},
        "relays": {r.nick: str(r.v4) for r in lay.relays},
        "web": {"v4": str(lay.web4), "v6": str(lay.web6), "check_url": info.check_url},
        "lan_resolver": str(lay.resolver4),
        "onion": info.onion,
        "bridge_line": info.bridge_line,
        "containers": {c.ns: {"v4": str(c.v4), "v6": str(c.v6)} for c in lay.containers},
        "container_bridge": {"v4": str(lay.ct_gw4), "v6": str(lay.ct_gw6)},
        "client_config": str(info.client_config_path),
        "timings": info.timings,
    }


def _up_text(data: dict[str, Any]) -> str:
    ns = data["namespaces"]
    relays = ", ".join(f"{n} {a}" for n, a in data["relays"].items())
    return "\n".join([
        f"lab up in {max(data['timings'].values()):.1f} s",
        f"  relays: {relays}",
        f"  web server: {data['web']['check_url']} (also [{data['web']['v6']}])",
        f"  onion service: http://{data['onion']}/",
        "  obfs4 bridge: " + (data["bridge_line"] or "none (no obfs4proxy/lyrebird installed)"),
        f"  containers behind the client's bridge ({data['container_bridge']['v4']}): "
        + (", ".join(f"{n} {a['v4']}" for n, a in data["containers"].items()) or "none"),
        f"  LAN resolver: {data['lan_resolver']}",
        f"  client namespace: {ns['client']} (guest: {ns['guest']})",
        f"  netspectre config for the client: {data['client_config']}",
        "  next: netspectre lab shell, then inside: "
        f"netspectre --config {data['client_config']} start",
    ])


def _status_text(st: dict[str, Any]) -> str:
    lines = [f"lab: {'UP' if st['up'] else 'NOT UP'} ({st['dir']})"]
    for ns, present in st["namespaces"].items():
        lines.append(f"  namespace {ns}: {'present' if present else 'absent'}")
    for p in st["processes"]:
        lines.append(f"  {p['name']:<14} pid {p['pid']:<7} {p['rss_kib'] / 1024:6.1f} MiB")
    if st["processes"]:
        lines.append(f"  total RSS {st['rss_kib_total'] / 1024:.1f} MiB")
    if "consensus" in st:
        missing = st["consensus"]["missing"]
        lines.append(f"  consensus: {len(st['consensus']['relays'])} relays"
                     + (f", missing {', '.join(missing)}" if missing else ""))
        ready = st["onion_descriptor"].get("ready")
        lines.append(f"  onion: {st['onion']} ({'published' if ready else 'not yet published'})")
    if st.get("missing_processes"):
        lines.append(f"  not running: {', '.join(st['missing_processes'])}")
    if st.get("problem"):
        lines.append(f"  problem: {st['problem']}")
    return "\n".join(lines)


def _wrap(text: str, indent: int, first: str = "") -> list[str]:
    import textwrap

    return textwrap.wrap(text, width=WIDTH, initial_indent=first or " " * indent,
                         subsequent_indent=" " * indent)


def _intro_text(data: dict[str, Any]) -> str:
    ns = data["namespaces"]
    w = max(len(n) for n in ns.values())
    r = data["relays"]
    hosts = [
        (ns["internet"], f"\"the internet\": a private Tor network ({r['authorities']} "
         f"directory authorities, {r['middles']} middle, {r['exits']} exit "
         f"relay{'s' if r['exits'] != 1 else ''}, an onion service), a web server that "
         "reports the address it sees (like check.torproject.org) and DNS servers"),
        (ns["client"], "\"your computer\": netspectre runs here, with its own tor"),
        (ns["guest"], "a container or VM whose traffic is routed through the client"),
    ]
    lines = [
        *_wrap("netspectre lab demo: netspectre torifies a machine inside a private Tor "
               "network, and proves that nothing leaks.", 0),
        "",
        "What you are looking at",
        *_wrap("A tiny internet built on this machine from Linux network namespaces "
               "(isolated network stacks, like separate computers):", 2),
    ]
    for name, what in hosts:
        lines += _wrap(what, 6 + w, first=f"    {name:<{w}}  ")
    lines += _wrap(
        "Nothing touches your real network: the lab uses only documentation addresses ("
        + ", ".join(data["ranges"]) + ") and has no route out; your own firewall, DNS and "
        "sysctls are left alone, and everything is removed at the end. tcpdump records every "
        "packet the client sends while netspectre is active.", 2)
    lines += ["", "What each check proves (SKIP: not run because a step it needs failed)"]
    for step in data["plan"]:
        lines += _wrap(step["proves"], TITLE_WIDTH + 3,
                       first=f"  {step['title']:<{TITLE_WIDTH}} ")
    lines += ["", "Running (well under a minute; Ctrl-C stops it and cleans up)"]
    return "\n".join(lines)


WIDTH = 100
TITLE_WIDTH = 36


def check_line(c: dict[str, Any]) -> str:
    seconds = f"{c['seconds']:5.1f} s" if c["verdict"] != "SKIP" else "       "
    return f"{c['verdict']}  {c['title']:<{TITLE_WIDTH}} {seconds}  {c['evidence']}"


def _demo_summary(data: dict[str, Any]) -> str:
    total = len(data["checks"])
    if data["ok"]:
        head = (f"ALL {total} CHECKS PASSED in {data['total_s']:.1f} s: while netspectre was "
                "active, nothing left the client except Tor's own connections to relays.")
    else:
        head = (f"FAILED: {len(data['failed'])} of {total} checks failed"
                + (f" ({', '.join(data['failed'])})" if data["failed"] else "")
                + (f", {len(data['skipped'])} not run" if data["skipped"] else "")
                + f"; {data['total_s']:.1f} s")
    return "\n" + head


def _demo(out: Output, spec: LabSpec, backend: str | None, keep: bool) -> int:
    from netspectre.lab import checks, demo

    demo.require(spec)
    if not out.json:
        out.report({}, _intro_text(demo.intro(spec)))

    def on_check(c: Any) -> None:
        if not out.json:
            out.report({}, check_line(checks.row(c)))

    def on_step(message: str, seconds: float) -> None:
        if not out.json:
            out.report({}, f"      [{seconds:5.1f} s] {message}")

    def on_event(ev: Any) -> None:
        if not out.json:
            out.event(ev)

    data = demo.run(spec, hooks=demo.Hooks(on_check=on_check, on_event=on_event,
                                           on_step=on_step), backend=backend, keep=keep)
    out.report(data, _demo_summary(data))
    return 0 if data["ok"] else 1


def run(
    action: str,
    out: Output,
    spec: LabSpec | None = None,
    *,
    backend: str | None = None,
    keep: bool = False,
) -> int:
    spec = spec or LabSpec()
    if action == "up":
        def step(message: str, seconds: float) -> None:
            if not out.json:
                out.report({}, f"[{seconds:5.1f} s] {message}")

        data = up_summary(lifecycle.up(spec, on_step=step))
        out.report(data, _up_text(data))
        return 0
    if action == "down":
        lifecycle.down(spec)
        out.report({"down": True}, "lab: down (namespaces, processes and files removed)")
        return 0
    if action == "status":
        st = lifecycle.status(spec)
        out.report(st, _status_text(st))
        return 0 if st["up"] else 1
    if action == "shell":
        if not lifecycle.status(spec)["namespaces"][spec.client_ns]:
            raise Error("the lab is not up", "run `netspectre lab up` first")
        argv = lifecycle.shell_argv(spec, os.environ.get("SHELL"))
        os.execvp(argv[0], argv)
    if action == "demo":
        return _demo(out, spec, backend, keep)
    raise Error(f"unknown lab action {action!r}")
