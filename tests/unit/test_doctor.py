"""`netspectre doctor`'s judges on fixture facts (pure: no root, no system)."""

from __future__ import annotations

from pathlib import Path

from netspectre import config
from netspectre.backends import Backend
from netspectre.doctor import dns, facts, leftovers, network, tor
from netspectre.doctor.findings import install
from netspectre.findings import Finding
from netspectre.state import Phase, State
from netspectre.tor.protocol import BootstrapEvent

MANAGED = config.Config()
SYSTEM = config.parse('[tor]\nmode = "system"\ncontrol = "/run/tor/control"\n')
BOOT = "b00t"


def st(phase: Phase = Phase.ACTIVE, boot: str = BOOT, backend: str = "nft") -> State:
    return State(phase=phase, backend=Backend(backend), since=1000.0, boot_id=boot)


def sf(**kw: object) -> leftovers.StateFacts:
    base: dict[str, object] = {"root": True, "boot_id": BOOT, "rules": (), "now": 4600.0,
                               "ipv6": {"all": "0", "default": "0"}}
    base.update(kw)
    return leftovers.StateFacts(**base)  # type: ignore[arg-type]


# -- tor --------------------------------------------------------------------------------------


def test_tor_missing_names_the_install_command_of_the_package_manager_found() -> None:
    f = tor.installed(MANAGED, tor.TorFacts(binary=None, managers=("pacman",), running=False))
    assert f.ok is False and f.fix == "sudo pacman -S tor"
    assert install("tor", ()) == "sudo apt install tor / sudo dnf install tor / sudo pacman -S tor"
    assert tor.installed(MANAGED, tor.TorFacts("/usr/sbin/tor", (), False)).ok is True


def test_system_tor_unreachable_gives_start_and_torrc_lines() -> None:
    f = tor.installed(SYSTEM, tor.TorFacts("/usr/sbin/tor", ("apt-get",), False,
                                           error="No such file or directory"))
    assert f.ok is False and f.check == "system tor reachable"
    assert f.fix.startswith("sudo systemctl start tor")
    for line in ("ControlSocket /run/tor/control", "TransPort 127.0.0.1:9040",
                 "DNSPort 127.0.0.1:9053", "AutomapHostsOnResolve 1"):
        assert line in f.fix
    lacking = tor.installed(SYSTEM, tor.TorFacts("/usr/sbin/tor", (), True, reachable=True,
                                                 lacking=("DNSPort 127.0.0.1:9053",)))
    assert lacking.ok is False and "DNSPort 127.0.0.1:9053" in lacking.detail
    whole = tor.installed(SYSTEM, tor.TorFacts("/usr/sbin/tor", (), True, reachable=True))
    assert whole.ok is True


def test_bootstrap_phase_and_warning() -> None:
    event = BootstrapEvent(5, "conn", "Connecting to a relay", "Connection refused")
    f = tor.bootstrapped(MANAGED, tor.TorFacts("/t", (), True, pid=7, reachable=True,
                                               bootstrap=event), active=True)
    assert f.ok is False
    assert "5 % (conn: Connecting to a relay)" in f.detail and "Connection refused" in f.detail
    assert "kill switch" in f.detail
    done = tor.bootstrapped(MANAGED, tor.TorFacts("/t", (), True, reachable=True,
                                                  bootstrap=BootstrapEvent(100, "done", "Done")),
                            active=True)
    assert done.ok is True


def test_active_without_tor_says_the_kill_switch_holds() -> None:
    gone = tor.TorFacts("/t", (), running=False, supervisor=False, complaint="bad torrc")
    f = tor.bootstrapped(MANAGED, gone, active=True)
    assert f.ok is False and "kill switch holds, nothing gets out" in f.detail
    assert f.fix == "sudo netspectre restart" and "bad torrc" in f.detail
    idle = tor.bootstrapped(MANAGED, gone, active=False)
    assert idle.ok is None


def test_clock_skew_from_the_notice_log() -> None:
    lines = [
        "Jan 01 00:00:00.000 [notice] Tor 0.4.9.11 opening new log file.",
        "Jan 01 00:00:01.000 [warn] Our clock is 2 hours, 3 minutes behind the time published "
        "in the consensus network status document (2025-01-01 02:00:00 UTC).  Tor needs an "
        "accurate clock to work correctly. Please check your time and date settings!",
    ]
    f = tor.clock(lines, log="n.log", active=True)
    assert f.ok is False and "2 hours, 3 minutes behind" in f.detail
    assert f.fix.startswith("sudo date -s '+2 hours 3 minutes'")
    assert "NTP cannot sync while netspectre is active" in f.fix
    netinfo = ["[warn] Received NETINFO cell with skewed time (OR:203.0.113.1:443): It seems "
               "that our clock is ahead by 1 days, 0 hours, 5 minutes, or that theirs is "
               "behind. Tor requires an accurate clock to work"]
    assert tor.clock(netinfo, log="n", active=False).fix.startswith(
        "sudo date -s '-1 day 0 hours 5 minutes'")
    # a complaint from before tor's last start is history
    assert tor.clock([*lines, "[notice] Tor 0.4.9.11 opening log file."], log="n",
                     active=True).ok is True
    assert tor.clock(None, log="n", active=True).ok is None
    assert tor.clock(["[notice] Bootstrapped 5%"], log="n", active=True).ok is True


# -- ports and firewall -----------------------------------------------------------------------


def test_port_taken_names_the_process_and_both_fixes() -> None:
    fact = network.PortFact("tor.dns_port", 9053, True, True,
                            owners=((4242, "avahi-daemon (pid 4242, uid 108)"),), alternative=9054)
    f = network.port(MANAGED, fact, root=True)
    assert f.ok is False and "avahi-daemon (pid 4242, uid 108)" in f.detail
    assert f.fix.startswith("sudo kill 4242") and "dns_port = 9054" in f.fix
    ours = network.PortFact("tor.trans_port", 9040, False, True, ((7, "tor (pid 7)"),), ours=True)
    assert network.port(MANAGED, ours, root=True).ok is True
    assert network.port(MANAGED, network.PortFact("tor.trans_port", 9040, False, False),
                        root=True).ok is True
    hidden = network.port(MANAGED, network.PortFact("tor.trans_port", 9040, False, True),
                          root=False)
    assert hidden.ok is False and "only root" in hidden.detail
    # system mode: the system tor must hold them
    assert network.port(SYSTEM, network.PortFact("tor.trans_port", 9040, False, False),
                        root=True).ok is False
    assert network.port(SYSTEM, network.PortFact("tor.trans_port", 9040, False, True,
                                                 ((9, "tor (pid 9, uid 105)"),)),
                        root=True).ok is True


def test_firewall_tools() -> None:
    nft = config.parse('[firewall]\nbackend = "nft"\n')
    missing = network.FirewallFacts(None, "`nft` not found", missing="nft", managers=("dnf",))
    f = network.tools(nft, missing)
    assert f.ok is False and f.fix.startswith("sudo dnf install nftables")
    assert 'backend = "auto"' in f.fix
    assert network.tools(nft, network.FirewallFacts("nft", "configured")).ok is True


def test_count_rules_ignores_ours_and_accept_policies() -> None:
    save = ("*filter\n:INPUT ACCEPT [0:0]\n:OUTPUT DROP [0:0]\n:NETSPECTRE-OUT - [0:0]\n"
            "-A OUTPUT -j NETSPECTRE-OUT\n-A OUTPUT -d 203.0.113.7/32 -j DROP\nCOMMIT\n")
    assert network.count_rules(save) == 2  # the DROP policy and the foreign rule


def test_iptables_flavours() -> None:
    def judge(legacy: int | None, nft: int | None, system: str = "nf_tables") -> Finding:
        return network.flavours(network.FirewallFacts("nft", "", system_iptables=system,
                                                      legacy_rules=legacy, nft_rules=nft),
                                root=True)

    both = judge(3, 2)
    assert both.ok is False and "two iptables rule sets coexist" in both.detail
    assert "update-alternatives --set iptables /usr/sbin/iptables-nft" in both.fix
    hidden = judge(1, 0)
    assert hidden.ok is False and "does not show them" in hidden.detail
    assert judge(0, 4).ok is True
    assert judge(0, 1, "legacy").ok is False
    assert judge(None, None).ok is None


# -- DNS --------------------------------------------------------------------------------------


def rc(text: str, **kw: object) -> dns.ResolvConf:
    return dns.ResolvConf("/etc/resolv.conf", exists=True, text=text, **kw)  # type: ignore[arg-type]


LAN = ("198.51.100.0/24",)


def test_resolv_conf_variants() -> None:
    def judge(r: dns.ResolvConf) -> bool | None:
        return dns.resolv_conf(r, lan=LAN, active=True).ok

    assert judge(dns.ResolvConf("/etc/resolv.conf", exists=False)) is False
    dangling = dns.resolv_conf(dns.ResolvConf("/etc/resolv.conf", exists=False,
                                              symlink="../run/systemd/resolve/stub-resolv.conf"),
                               lan=LAN, active=True)
    assert dangling.ok is False and "does not exist" in dangling.detail
    assert "systemctl restart systemd-resolved" in dangling.fix
    assert judge(rc("")) is False
    assert judge(rc("search example.org\n")) is False
    assert judge(rc("nameserver 2001:db8::53\n")) is False
    assert judge(rc("nameserver 2001:db8::53\nnameserver 203.0.113.53\n")) is True
    assert judge(rc("nameserver ::1\n")) is True
    tcp = dns.resolv_conf(rc("nameserver 198.51.100.53\noptions use-vc\n"), lan=LAN, active=True)
    assert tcp.ok is False and "refuses TCP 53 to the LAN" in tcp.detail
    assert judge(rc("nameserver 203.0.113.53\noptions use-vc\n")) is True
    lan = dns.resolv_conf(rc("nameserver 198.51.100.53 # router\n"), lan=LAN, active=True)
    assert lan.ok is True and "TCP to it is refused" in lan.detail


def test_resolved() -> None:
    stub = rc("nameserver 127.0.0.53\noptions edns0 trust-ad\n")
    dead = dns.resolved(stub, dns.Resolved(running=False))
    assert dead.ok is False and "not running" in dead.detail
    assert dead.fix.startswith("sudo systemctl start systemd-resolved")
    assert dns.resolved(stub, dns.Resolved(running=True)).ok is True
    assert dns.resolved(rc("nameserver 203.0.113.53\n"), dns.Resolved(False)).ok is True
    strict = dns.resolved(stub, dns.Resolved(True, {"DNSSEC": ("yes", "/etc/x.conf")}))
    assert strict.ok is False and "only A, AAAA and PTR" in strict.detail
    assert "DNSSEC=no/' /etc/x.conf" in strict.fix
    dot = dns.resolved(stub, dns.Resolved(True, {"DNSOverTLS": ("opportunistic", "/etc/y")}))
    assert dot.ok is False and "bypassing Tor's DNSPort" in dot.detail


def test_resolv_conf_reader(tmp_path: Path) -> None:
    link = tmp_path / "resolv.conf"
    link.symlink_to(tmp_path / "gone")
    read = facts.resolv_conf(link)
    assert not read.exists and read.symlink == str(tmp_path / "gone")
    (tmp_path / "gone").write_text("nameserver 203.0.113.53\n")
    assert facts.resolv_conf(link).exists
    conf = tmp_path / "resolved.conf"
    conf.write_text("[Resolve]\n#DNSSEC=no\nDNSSEC=yes\n")
    drop = tmp_path / "d"
    drop.mkdir()
    (drop / "z.conf").write_text("[Resolve]\nDNSSEC=no\nDNSOverTLS=yes\n")
    proc = tmp_path / "proc"
    (proc / "12").mkdir(parents=True)
    (proc / "12" / "comm").write_text("systemd-resolve\n")
    found = facts.resolved(proc, (conf, drop))
    assert found.running
    assert found.settings == {"DNSSEC": ("no", str(drop / "z.conf")),
                              "DNSOverTLS": ("yes", str(drop / "z.conf"))}


# -- leftovers --------------------------------------------------------------------------------


def test_leftover_rules_without_state() -> None:
    f = leftovers.state(sf(rules=("nft",)))
    assert f.ok is False and "no internet" in f.detail and f.fix == "sudo netspectre stop"
    assert leftovers.state(sf()).ok is True


def test_stale_and_interrupted_states() -> None:
    assert "previous boot" in leftovers.state(sf(state=st(boot="old"))).detail
    assert leftovers.state(sf(state=st(boot="old"))).ok is False
    assert leftovers.state(sf(state=st(Phase.APPLYING), rules=("nft",))).ok is False
    assert leftovers.state(sf(state=st(Phase.STOPPING))).ok is False
    corrupt = leftovers.state(sf(error="/run/x/state.json: corrupt state file"))
    assert corrupt.ok is False and corrupt.fix.startswith("sudo netspectre stop --force")
    assert leftovers.state(sf(state=st(), rules=("nft",))).ok is True
    assert leftovers.state(sf(root=False)).ok is None


def test_active_but_rules_gone() -> None:
    f = leftovers.active(sf(state=st(), rules=()))
    assert f.ok is False and "NOT protected" in f.detail and f.fix == "sudo netspectre restart"
    assert leftovers.active(sf(state=st(), rules=("nft",))).ok is True
    assert leftovers.active(sf()).ok is None


def test_lockdown_marker() -> None:
    f = leftovers.lockdown(sf(lockdown={"reason": "`tor` not found", "since": 1000.0}))
    assert f.ok is False and "`tor` not found" in f.detail and "1h00m ago" in f.detail
    assert "sudo netspectre stop" in f.fix
    assert leftovers.lockdown(sf()).ok is True


def test_ipv6_left_off() -> None:
    off = {"all": "1", "default": "1"}
    f = leftovers.ipv6(sf(ipv6=off))
    assert f.ok is False
    assert f.fix == ("sudo sysctl -w net.ipv6.conf.all.disable_ipv6=0 "
                     "net.ipv6.conf.default.disable_ipv6=0")
    assert leftovers.ipv6(sf(ipv6=off, state=st(), rules=("nft",))).ok is True
    assert leftovers.ipv6(sf()).ok is True
    assert leftovers.ipv6(sf(ipv6=None)).ok is None
