"""Policy building and the state file: pure values, atomic files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from netspectre import config, policy, state, sysctl
from netspectre.backends import Backend, names, nft
from netspectre.errors import StateError
from netspectre.state import Phase, State


def test_lan_ranges_are_split_by_family_and_deduplicated_in_config_order() -> None:
    c = config.parse(
        '[firewall]\nlan = ["203.0.113.0/24", "198.51.100.128/25", "2001:db8::/48",'
        ' "198.51.100.0/25", "2001:db8::/32", "203.0.113.0/24"]'
    )
    p = policy.build(c, policy.HostFacts(tor_uid=102, tor_user="debian-tor"))
    assert p.lan4 == ("203.0.113.0/24", "198.51.100.128/25", "198.51.100.0/25")
    assert p.lan6 == ("2001:db8::/48", "2001:db8::/32")
    assert nft.by_prefix(p.lan4) == {24: ["203.0.113.0"], 25: ["198.51.100.128", "198.51.100.0"]}


def test_summary_keeps_a_few_lan_ranges_and_the_count() -> None:
    lan = ", ".join(f'"198.51.100.{i * 4}/30"' for i in range(40))
    p = policy.build(config.parse(f"[firewall]\nlan = [{lan}]"),
                     policy.HostFacts(tor_uid=102, tor_user="debian-tor"))
    summary = p.summary()
    lan_kept = summary["lan"]
    assert isinstance(lan_kept, list)
    assert summary["lan_count"] == 40 and len(lan_kept) == policy.SUMMARY_LAN


def test_nat_priority_runs_before_docker_and_after_conntrack() -> None:
    assert -200 < names.NAT_PRIORITY < -100


def _state(**kw: object) -> State:
    base: dict[str, object] = dict(
        phase=Phase.ACTIVE, backend=Backend.NFT, since=1.5, boot_id="b",
        sysctls={"net/ipv6/conf/all/disable_ipv6": "0"}, policy={"x": 1},
    )
    base.update(kw)
    return State(**base)  # type: ignore[arg-type]


def test_state_round_trips_atomically(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    s = _state()
    state.save(path, s)
    assert state.load(path) == s
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temp file left


@pytest.mark.parametrize(
    "text", ["{not json", json.dumps({"version": 99, "phase": "active"}), "[]",
             json.dumps({"version": 1, "phase": "dancing"})]
)
def test_bad_state_files_are_refused_with_a_hint(tmp_path: Path, text: str) -> None:
    path = tmp_path / "state.json"
    path.write_text(text)
    with pytest.raises(StateError) as info:
        state.load(path)
    assert info.value.hint and "stop" in info.value.hint


def test_missing_state_is_none(tmp_path: Path) -> None:
    assert state.load(tmp_path / "state.json") is None


def test_lock_refuses_a_second_holder(tmp_path: Path) -> None:
    lock = tmp_path / "lock"
    with state.locked(lock):
        pid = os.fork()
        if pid == 0:  # child: must fail to take the lock
            try:
                with state.locked(lock):
                    os._exit(1)
            except StateError:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert os.WEXITSTATUS(status) == 0


def test_sysctl_restore_puts_all_and_default_before_interfaces() -> None:
    saved = {
        "net/ipv6/conf/eth0/disable_ipv6": "1",
        "net/ipv6/conf/default/disable_ipv6": "1",
        "net/ipv6/conf/all/disable_ipv6": "0",
        "net/ipv6/conf/lo/disable_ipv6": "0",
    }
    order = [k.split("/")[-2] for k, _ in sysctl.restore_order(saved)]
    assert order == ["all", "default", "eth0", "lo"]
    assert sysctl.ipv6_keys(["lo", "eth0", "all", "default"])[0].endswith("all/disable_ipv6")
