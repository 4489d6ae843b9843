"""What the run's namespace holds: routes, rules and the files it sees. Pure.

Routing does the refusing: the main table has no default route, so UDP (but DNS), ICMP and
everything else get ENETUNREACH from connect()/sendto() before a packet exists. Policy rules
send TCP and UDP/53 to a table whose default route is `lo`, where the nft table redirects them
to the relay's and the DNS responder's sockets. A filter chain refuses whatever else reaches
`lo` for a non-loopback address (defence in depth: nothing of that can leave anyway, the
namespace has no other interface).
"""

from __future__ import annotations

from dataclasses import dataclass

TABLE = "netspectre_run"
ROUTE_TABLE = 100
DNS_PORT = 53
RESOLV_CONF = "nameserver 127.0.0.1\nnameserver ::1\noptions edns0 trust-ad\n"

# Daemons that resolve names in the host's network namespace on a client's behalf, over a Unix
# socket a network namespace does not isolate. Hidden behind an empty read-only tmpfs.
HIDDEN = (
    "/run/systemd/resolve",  # systemd-resolved's varlink socket and stub resolv.conf
    "/run/nscd",  # nscd's socket (glibc asks it before DNS)
    "/run/avahi-daemon",  # avahi's socket (nss-mdns)
    "/run/dbus",  # the D-Bus system bus: resolved and NetworkManager answer there too
)


@dataclass(frozen=True)
class Ports:
    relay: int  # the TCP relay's listeners, 127.0.0.1 and ::1
    ipv6: bool  # ::1 exists in the namespace


def ip_batches(ipv6: bool) -> tuple[tuple[str, str], ...]:
    """(family flag, `ip -batch -` input): loopback, the policy rules and the routes."""
    v4 = "\n".join([
        "link set lo up",
        f"rule add ipproto tcp lookup {ROUTE_TABLE} pref 100",
        f"rule add ipproto udp dport {DNS_PORT} lookup {ROUTE_TABLE} pref 101",
        f"route add default dev lo src 127.0.0.1 table {ROUTE_TABLE}",
    ]) + "\n"
    v6 = "\n".join([
        f"rule add ipproto tcp lookup {ROUTE_TABLE} pref 100",
        f"rule add ipproto udp dport {DNS_PORT} lookup {ROUTE_TABLE} pref 101",
        f"route add default dev lo table {ROUTE_TABLE}",
    ]) + "\n"
    return (("-4", v4), ("-6", v6)) if ipv6 else (("-4", v4),)


def nft_script(ports: Ports) -> str:
    """The namespace's one table: DNS to the responder, other non-local TCP to the relay."""
    return "\n".join([
        f"table inet {TABLE} {{",
        "\tchain nat {",
        "\t\ttype nat hook output priority -100; policy accept;",
        f"\t\tmeta l4proto {{ tcp, udp }} th dport {DNS_PORT} redirect to :{DNS_PORT}",
        "\t\tfib daddr type local return",
        f"\t\tmeta l4proto tcp redirect to :{ports.relay}",
        "\t}",
        "\tchain out {",
        "\t\ttype filter hook output priority 0; policy drop;",
        "\t\tip daddr 127.0.0.0/8 accept",
        "\t\tip6 daddr ::1 accept",
        "\t\tmeta l4proto tcp reject with tcp reset",
        "\t\treject with icmpx type admin-prohibited",
        "\t}",
        "}",
    ]) + "\n"


def nsswitch(original: str) -> str:
    """The host's nsswitch.conf with one `hosts:` line that asks only files and DNS (no
    resolve, mdns, myhostname-over-D-Bus): DNS is the run's responder."""
    out = [line for line in original.splitlines()
           if not line.split("#", 1)[0].strip().startswith("hosts:")]
    out.append("hosts: files dns")
    return "\n".join(out) + "\n"
