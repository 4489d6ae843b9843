"""Policy → iptables-restore --noflush scripts: our own chains plus one marked jump per hook. Pure.

What is ours is read back from `iptables-save` text (iptables_save): our chain names and the
marker comment.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from netspectre.backends import iptables_gateway as gw
from netspectre.backends.iptables_rules import Chain
from netspectre.backends.iptables_rules import bypass as _bypass
from netspectre.backends.iptables_rules import quote as _quote
from netspectre.backends.iptables_rules import refuse as _refuse
from netspectre.backends.iptables_rules import rule as _rule
from netspectre.backends.iptables_rules import tcp_flags as tcp_flags

# Re-exported: reading back what is ours is part of this backend's contract (iptables_shell,
# doctor and the tests call iptables.parse…); iptables_save owns it.
from netspectre.backends.iptables_save import Rule, Saved
from netspectre.backends.iptables_save import ours_line as ours_line
from netspectre.backends.iptables_save import parse as parse
from netspectre.backends.iptables_save import parse_counters as parse_counters
from netspectre.backends.names import (
    BAD_TCP_FLAGS,
    IPT_CHAINS,
    IPT_FORWARD,
    IPT_INPUT,
    IPT_NAT,
    IPT_OUTPUT,
    IPT_PREROUTING,
    MARKER,
    ND_TYPES,
    Backend,
)
from netspectre.backends.script import Script

if TYPE_CHECKING:
    from netspectre.policy import Policy

NAT, OUT, FWD, IN = IPT_NAT, IPT_OUTPUT, IPT_FORWARD, IPT_INPUT
CHAINS = IPT_CHAINS

_VARIANTS = {Backend.IPTABLES_NFT: "nft", Backend.IPTABLES_LEGACY: "legacy"}


def _tool(variant: Backend, family: int, verb: str) -> str:
    if variant not in _VARIANTS:
        raise ValueError(f"not an iptables backend: {variant!r}")
    if family not in (4, 6):
        raise ValueError(f"family must be 4 or 6, not {family!r}")
    return f"{'iptables' if family == 4 else 'ip6tables'}-{_VARIANTS[variant]}-{verb}"


def save_argv(variant: Backend, family: int, *, counters: bool = False) -> tuple[str, ...]:
    return (_tool(variant, family, "save"), *(("-c",) if counters else ()))


def restore_argv(variant: Backend, family: int) -> tuple[str, ...]:
    # -w: wait for the xtables lock (docker, firewalld) instead of failing at once.
    return (_tool(variant, family, "restore"), "-w", "5", "--noflush")


# ---------------------------------------------------------------------------------------------
# What we want: chains and their rules. Each chain follows the nft step of the same role
# (nft._nat, _output, _forward, _input); the rule data both need comes from names.


def _jump(chain: Chain) -> str:
    return _rule(f"-m comment --comment {_quote(MARKER)}", chain.name)


def _sanity(p: Policy, family: int) -> list[str]:
    # Short DNS datagrams crash tor (see nft.py); iptables' length is the whole IP packet.
    short = 20 + 8 + 12 - 1 if family == 4 else 40 + 8 + 12 - 1
    return [
        *_refuse("-m conntrack --ctstate INVALID", "DROP", "blocked_invalid"),
        *(r for f in BAD_TCP_FLAGS for r in _refuse(tcp_flags(*f), "DROP", "blocked_invalid")),
        *_refuse(f"-p udp -m udp --dport {p.dns_port} -m length --length 0:{short}", "DROP",
                 "blocked_invalid"),
    ]


# Allowed packets RETURN to the built-in chain instead of ACCEPTing: an ACCEPT would end the
# whole filter table and skip other software's rules after our jump, whereas nft's separate table
# lets every other table still drop. Blocked packets end in our chain, so only what we allow
# ever reaches the rest of the built-in chain.
def _v4(p: Policy) -> tuple[Chain, ...]:
    uid = f"-m owner --uid-owner {p.tor_uid}"
    trans = f"REDIRECT --to-ports {p.trans_port}"
    admin = "REJECT --reject-with icmp-admin-prohibited"
    nat = [
        _rule(uid, "RETURN"),
        *_bypass(p),
        _rule("-p udp -m udp --dport 53", f"REDIRECT --to-ports {p.dns_port}", "dns_redirected"),
        _rule(f"-d {p.virtual_network} -p tcp", trans, "tcp_torified"),
        _rule("-m addrtype --dst-type LOCAL", "RETURN"),
        # Even without allow_lan: LAN TCP is refused by the filter, never torified (so a LAN
        # host never sees it arrive from an exit). One rule per range: no ipset assumed.
        *(_rule(f"-d {n}", "RETURN") for n in p.lan4),
        _rule("-p tcp", trans, "tcp_torified"),
    ]
    out = [
        *_sanity(p, 4),
        _rule("-o lo", "RETURN"),
        _rule("-d 127.0.0.0/8", "RETURN"),
        *gw.output_rules(p, 4, _rule),
        _rule(uid, "RETURN"),
        *_bypass(p),
        *_replies(p),
        *_refuse(f"-d {p.virtual_network}", admin, "blocked_other"),
        *_refuse("-p tcp -m tcp --dport 53", admin, "blocked_dns"),
        *_refuse("-p udp -m udp --dport 53", admin, "blocked_dns"),
    ]
    if p.allow_lan:
        out += [_rule(f"-d {n}", "RETURN") for n in p.lan4]
        out.append(_rule("-d 255.255.255.255/32 -p udp -m udp --sport 68 --dport 67", "RETURN"))
    out += [
        *_refuse("-p tcp", "REJECT --reject-with tcp-reset", "blocked_tcp"),
        *_refuse("-p udp", admin, "blocked_udp"),
        *_refuse("-p icmp", admin, "blocked_icmp"),
        *_refuse("", admin, "blocked_other"),
    ]
    chains = [
        Chain("nat", NAT, "OUTPUT", tuple(nat)),
        Chain("filter", OUT, "OUTPUT", tuple(out)),
        _forward(p, 4, admin),
    ]
    if p.block_incoming:
        incoming = [
            *_gateway_in(p, 4),
            _rule("-m conntrack --ctstate INVALID", "DROP"),
            _rule("-m conntrack --ctstate RELATED,ESTABLISHED", "RETURN"),
        ]
        if p.allow_lan:
            incoming.append(_rule("-p udp -m udp --sport 67 --dport 68", "RETURN"))
        incoming.append(_rule("", "DROP", "blocked_incoming"))
        chains.append(Chain("filter", IN, "INPUT", tuple(incoming)))
    return (*chains, *_gateway_chains(p, 4))


def _gateway_in(p: Policy, family: int) -> list[str]:
    """The input chain's head: loopback, then (with a gateway) its interfaces' rules."""
    return [_rule("-i lo", "RETURN"), *gw.input_rules(p, family, _rule, _refuse)]


def _forward(p: Policy, family: int, admin: str) -> Chain:
    return Chain("filter", FWD, "FORWARD", (*gw.forward_rules(p, family, _refuse),
                                            *_refuse("", admin, "blocked_forward")))


def _gateway_chains(p: Policy, family: int) -> tuple[Chain, ...]:
    """[gateway]: its prerouting redirect, and its input rules when `incoming = "allow"`."""
    if not p.gateway:
        return ()
    pre = Chain("nat", IPT_PREROUTING, "PREROUTING", tuple(gw.prerouting(p, _rule)))
    if p.block_incoming:
        return (pre,)
    return (pre, Chain("filter", IN, "INPUT", tuple(_gateway_in(p, family))))


def _replies(p: Policy) -> list[str]:
    """incoming = "allow": our answers to connections others opened (nft: ct direction reply)."""
    return [] if p.block_incoming else [_rule("-m conntrack --ctdir REPLY", "RETURN")]


def _v6(p: Policy) -> tuple[Chain, ...]:
    admin = "REJECT --reject-with icmp6-adm-prohibited"
    # Tor's user gets no IPv6 (nft: `meta skuid … meta nfproto ipv4`), so no flow mark either.
    out = [
        *_sanity(p, 6),
        _rule("-o lo", "RETURN"),
        _rule("-d ::1/128", "RETURN"),
        *gw.output_rules(p, 6, _rule),
        *_bypass(p),
        *_replies(p),
        *(_refuse(f"-d {p.virtual_network6}", admin, "blocked_other") if p.torify_ipv6 else ()),
        *_refuse("-p tcp -m tcp --dport 53", admin, "blocked_dns"),
        *_refuse("-p udp -m udp --dport 53", admin, "blocked_dns"),
    ]
    nd = [_rule(f"-p ipv6-icmp -m icmp6 --icmpv6-type {t}", "RETURN") for _, t in ND_TYPES]
    if p.allow_lan:  # no DHCP rule here: DHCPv4 ports mean nothing on IPv6
        out += [_rule(f"-d {n}", "RETURN") for n in p.lan6]
    out += nd if p.neighbour_discovery else []
    out += _refuse("-p tcp", "REJECT --reject-with tcp-reset", "blocked_ipv6")
    out += _refuse("", admin, "blocked_ipv6")
    chains = [
        *((Chain("nat", NAT, "OUTPUT", tuple(gw.nat6(p, _rule))),) if p.torify_ipv6 else ()),
        Chain("filter", OUT, "OUTPUT", tuple(out)),
        _forward(p, 6, admin),
    ]
    if p.block_incoming:
        incoming = (
            *_gateway_in(p, 6),
            _rule("-m conntrack --ctstate INVALID", "DROP"),
            _rule("-m conntrack --ctstate RELATED,ESTABLISHED", "RETURN"),
            *(nd if p.neighbour_discovery else ()),
            _rule("", "DROP", "blocked_incoming"),
        )
        chains.append(Chain("filter", IN, "INPUT", incoming))
    return (*chains, *_gateway_chains(p, 6))


def chains(p: Policy, family: int) -> tuple[Chain, ...]:
    """The chains we want for one family (4 or 6)."""
    return _v4(p) if family == 4 else _v6(p)


# ---------------------------------------------------------------------------------------------
# From what is there to what we want, in one script per family.


def _kept_jump(saved: Saved, chain: Chain) -> Rule | None:
    """Our jump, if it is already the first rule of its hook and the only marked one there."""
    hook = [r for r in saved.rules if r.table == chain.table and r.chain == chain.hook]
    if hook and hook[0].spec == _jump(chain) and [r for r in hook if r.marked] == hook[:1]:
        return hook[0]
    return None


def _table_lines(saved: Saved, table: str, want: tuple[Chain, ...]) -> list[str]:
    wanted = [c for c in want if c.table == table]
    names = {c.name for c in wanted}
    stale = [n for n in CHAINS if n in saved.chains.get(table, ()) and n not in names]
    kept = {c.name: _kept_jump(saved, c) for c in wanted}
    kept_rules = {r.index for r in kept.values() if r is not None}
    # Marked rules anywhere outside our chains, and any rule still pointing at a chain we
    # remove (else -X fails); never other rules.
    doomed = [
        r for r in saved.rules
        if r.table == table and r.chain not in CHAINS and r.index not in kept_rules
        and (r.marked or r.target in stale)
    ]
    if not (wanted or doomed or stale):
        return []
    lines = [f"*{table}"]
    # Declaring a user chain under --noflush flushes it if it exists: a full, atomic replace.
    lines += [f":{c.name} - [0:0]" for c in wanted]
    lines += [f"-D {r.chain} {r.spec}" for r in doomed]
    for n in stale:
        lines += [f"-F {n}", f"-X {n}"]
    for c in wanted:
        lines += [f"-A {c.name} {rule}" for rule in c.rules]
    lines += [f"-I {c.hook} 1 {_jump(c)}" for c in wanted if kept[c.name] is None]
    return [*lines, "COMMIT"]


def _script(saved: Saved, want: tuple[Chain, ...], order: tuple[str, ...]) -> str:
    tables = dict.fromkeys([*order, *saved.tables])
    lines = [line for table in tables for line in _table_lines(saved, table, want)]
    return "\n".join(lines) + "\n" if lines else ""


# Each COMMIT is its own transaction (both variants keep an earlier table when a later one
# fails), so blocking comes up before redirecting and goes down after it.
_UP = ("filter", "nat")
_DOWN = ("nat", "filter")


def render(p: Policy, *, variant: Backend, saved_v4: str, saved_v6: str) -> tuple[Script, ...]:
    """(IPv6 script, IPv4 script): the family that only blocks goes first."""
    return tuple(
        Script(restore_argv(variant, family), _script(parse(saved), chains(p, family), _UP))
        for family, saved in ((6, saved_v6), (4, saved_v4))
    )


def teardown(*, variant: Backend, saved_v4: str, saved_v6: str) -> tuple[Script, ...]:
    """Remove what is ours, IPv4 first so IPv6 stays blocked to the end; () if nothing is."""
    scripts = []
    for family, saved in ((4, saved_v4), (6, saved_v6)):
        text = _script(parse(saved), (), _DOWN)
        if text:
            scripts.append(Script(restore_argv(variant, family), text))
    return tuple(scripts)
