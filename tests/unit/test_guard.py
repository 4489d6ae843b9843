"""The raw guard (#12): config, policy, rendering details, the fake-runner ordering. Pure."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from netspectre import config, facts, policy
from netspectre.backends import Backend, guard, guardwatch, nft
from netspectre.backends.nft_shell import NftFirewall
from netspectre.errors import ConfigError
from netspectre.plan import derive
from tests.support.fakehost import FakeHost

ON = policy.HostFacts(tor_uid=102, tor_user="debian-tor", devices=("eth0", "wlan0"),
                      guard_unsupported="")


def build(text: str = "", host: policy.HostFacts = ON) -> policy.Policy:
    return policy.build(config.parse(text), host)


@pytest.mark.parametrize(("value", "why"), [
    ("0", "exactly one"), ("3", "exactly one"), ("0x100000000", "exactly one"),
    ('"0x2000"', "integer"), ("true", "integer"), ("0x200000", "Tailscale"),
    ("0x40000", "Tailscale"), ("0x8000", "wg-quick"), ("0x10000000", "Calico"),
    ("0x100", "Cilium"),
])
def test_a_bad_mark_is_one_line_with_a_hint(value: str, why: str) -> None:
    with pytest.raises(ConfigError) as exc:
        config.parse(f"[firewall]\nraw_guard_mark = {value}\n")
    assert why in exc.value.message and "\n" not in exc.value.message
    assert exc.value.hint and "0x00002000" in exc.value.hint


def test_raw_guard_choices() -> None:
    assert config.parse("").firewall.raw_guard is config.RawGuard.AUTO
    with pytest.raises(ConfigError, match="'auto', 'on', 'off'"):
        config.parse('[firewall]\nraw_guard = "yes"\n')


def test_policy_is_off_with_a_reason_offline_off_or_unsupported() -> None:
    assert not build(host=policy.HostFacts(tor_uid=1, tor_user="t")).raw_guard
    off = build('[firewall]\nraw_guard = "off"\n')
    assert not off.raw_guard and off.raw_guard_off == 'raw_guard = "off"'
    assert off.guard_devices == () and nft.render(off)[0].text.count("netdev") == 0
    why = "the iptables-nft backend has no netdev family"
    p = build(host=policy.HostFacts(tor_uid=1, tor_user="t", devices=("eth0",),
                                    guard_unsupported=why))
    assert not p.raw_guard and p.summary()["raw_guard_off"] == why


def test_summary_names_the_guard_and_its_devices() -> None:
    s = build().summary()
    assert s["raw_guard"] == "on" and s["raw_guard_devices"] == ["eth0", "wlan0"]
    assert s["raw_guard_mark"] == "0x2000"


def test_a_new_interface_is_not_a_changed_config(tmp_path: Path) -> None:
    from netspectre.paths import Paths

    paths = Paths(run=tmp_path, lib=tmp_path, daemon=tmp_path)
    cfg = config.parse('[tor]\nmode = "system"\n')
    one = derive(cfg, ON, paths)
    more = derive(cfg, policy.HostFacts(tor_uid=102, tor_user="debian-tor",
                                        devices=("eth0", "usb0", "wlan0"),
                                        guard_unsupported=""), paths)
    assert one.digest() == more.digest()


def test_never_a_wildcard_or_loopback_device() -> None:
    p = policy.Policy(**{**build().__dict__, "guard_devices": ("lo", "w*", 'a"b', "eth0")})
    text = guard.netdev_chains(p, [])
    assert [line for line in text if "hook egress" in line] == [
        '\t\ttype filter hook egress device "eth0" priority 0; policy drop;']


def test_a_forged_mark_alone_passes_nowhere_but_the_lan() -> None:
    text = guard.netdev_table(build(), *nft._lan_sets(build()))
    marked = [line.strip() for line in text.splitlines() if "meta mark &" in line]
    assert marked and all("skuid 102" in r or "@lan4_" in r for r in marked)
    no_lan = guard.netdev_table(build("[firewall]\nallow_lan = false\n"), [], [])
    assert [r for r in no_lan.splitlines() if "meta mark &" in r and "skuid" not in r] == []


def test_guarded_devices_are_read_from_the_listing() -> None:
    listing = ('table netdev netspectre {\n\tchain egress_eth0 {\n'
               '\t\ttype filter hook egress device "eth0" priority filter; policy drop;\n'
               '\t}\n\tchain egress_v {\n\t\ttype filter hook egress device "v-1" priority '
               'filter; policy drop;\n\t}\n}\n')
    assert guard.guarded(listing) == ("eth0", "v-1")


def test_apply_commits_both_tables_in_one_transaction_and_remove_deletes_both() -> None:
    host = FakeHost("nft")
    fw = NftFirewall(host, exists=lambda: False, guard_exists=lambda: False)
    fw.apply(build())
    ((argv, text),) = host.calls
    assert argv == nft.ARGV and text is not None
    assert "delete table" not in text  # fresh start: neither table to replace
    assert text.index("table inet netspectre {") < text.index("table netdev netspectre {")
    host.calls.clear()
    NftFirewall(host, exists=lambda: True, guard_exists=lambda: True).apply(build())
    ((_, text),) = host.calls
    assert text is not None and text.startswith(
        "table inet netspectre {}\ndelete table inet netspectre\n"
        "table netdev netspectre {}\ndelete table netdev netspectre\n")
    host.calls.clear()
    NftFirewall(host, exists=lambda: True, guard_exists=lambda: True).remove()
    assert [t for _, t in host.calls] == [s.text for s in nft.teardown()]
    host.calls.clear()
    NftFirewall(host, exists=lambda: True, guard_exists=lambda: False).remove()
    assert len(host.calls) == 1


def test_turning_the_guard_off_deletes_its_table_in_the_same_commit() -> None:
    host = FakeHost("nft")
    NftFirewall(host, exists=lambda: True, guard_exists=lambda: True).apply(
        build('[firewall]\nraw_guard = "off"\n'))
    ((_, text),) = host.calls
    assert text is not None and "delete table netdev netspectre" in text
    assert "table netdev netspectre {\n" not in text


def test_iptables_backends_have_no_guard() -> None:
    host = FakeHost("nft")
    why = facts.guard_unsupported(Backend.IPTABLES_LEGACY, host)
    assert "iptables-legacy" in why and host.calls == []


def test_kernel_version_parsing() -> None:
    assert facts.kernel_version("6.18.44-fc-v1045") == (6, 18)
    assert facts.kernel_version("5.15.0-91-generic") < facts.EGRESS_KERNEL
    assert facts.kernel_version("weird") == (0, 0)


def test_interfaces_skip_loopback(tmp_path: Path) -> None:
    for name in ("lo", "eth0", "docker0"):
        (tmp_path / name).mkdir()
    assert facts.interfaces(tmp_path) == ("docker0", "eth0")


def test_the_watchers_policy_round_trips(tmp_path: Path) -> None:
    from netspectre.paths import Paths

    paths = Paths(run=tmp_path, lib=tmp_path, daemon=tmp_path)
    guardwatch.write_policy(paths, build())
    assert guardwatch.read_policy(paths) == build()
    assert oct(os.stat(guardwatch.policy_file(paths)).st_mode & 0o777) == "0o600"


def test_link_events_are_counted() -> None:
    msg = (32).to_bytes(4, "little") + guardwatch.RTM_NEWLINK.to_bytes(2, "little") + b"\0" * 26
    other = (16).to_bytes(4, "little") + (20).to_bytes(2, "little") + b"\0" * 10
    assert guardwatch.link_events(msg + other + msg) == 2
    assert guardwatch.link_events(b"") == 0


def test_doctor_names_each_interface_and_the_watcher() -> None:
    from netspectre.doctor import guard as judge

    rows = judge.findings({"raw_guard": "on", "in_force": True, "guarded": ["eth0"],
                           "interfaces": ["eth0", "usb0"], "watcher_pid": None})
    verdicts = {r.check: r.ok for r in rows}
    assert verdicts == {"raw guard on eth0": True, "raw guard on usb0": False,
                        "raw guard's watcher running": False}
    (gone,) = judge.findings({"raw_guard": "on", "in_force": False})
    assert gone.ok is False and "removed by hand" in gone.detail
    (off,) = judge.findings({"raw_guard": "off", "reason": "the iptables-nft backend …"})
    assert off.ok is None and "iptables-nft" in off.detail


def test_the_raw_probe_is_judged_by_errno_or_counter() -> None:
    import errno

    from netspectre import probes, rawprobe, wire

    ok, _ = rawprobe.judge_raw(probes.Observation(error=errno.ENOBUFS, at_send=True), {})
    assert ok
    ok, _ = rawprobe.judge_raw(probes.Observation(), {"blocked_raw": 1})
    assert ok
    ok, why = rawprobe.judge_raw(probes.Observation(), {})
    assert not ok and "left" in why
    frame = rawprobe.raw_frame(b"\x02" * 6, "198.51.100.1")
    assert frame[:6] == b"\xff" * 6 and frame[12:14] == b"\x08\x00"
    assert wire.checksum(frame[14:34]) == 0
