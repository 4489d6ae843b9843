"""The run's DNS responder, on the wire: read one question, build the answer. Pure.

What it answers (the relay asks Tor, see relay.py): A with the address Tor's exit resolved;
`.onion` A with an address from the run's own map (the relay connects by name); AAAA with no
data (Tor's SOCKS resolve gives IPv4 first; IPv6 literals still go through Tor); NOTIMP for
every other type, as Tor's DNSPort does.
"""

from __future__ import annotations

from netspectre.dnswire import CLASS_IN, TYPE_A, TYPE_AAAA, Question
from netspectre.dnswire import read_query as read
from netspectre.dnswire import reply as answer

__all__ = ["NOERROR", "NOTIMP", "NXDOMAIN", "REFUSED", "SERVFAIL", "Question", "answer", "read",
           "wanted"]

NOERROR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 2, 3, 4, 5


def wanted(q: Question) -> str:
    """What the responder does with a question: "a", "onion", "empty" or "notimp"."""
    if q.qclass != CLASS_IN:
        return "notimp"
    if q.qtype == TYPE_A:
        return "onion" if q.name.endswith(".onion") else "a"
    if q.qtype == TYPE_AAAA:
        return "empty"
    return "notimp"
