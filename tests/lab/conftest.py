"""The private Tor network, built once per pytest session and always torn down.

Its own prefix (`nslabt-`), so a developer's `netspectre lab up` (prefix `nslab-`) and the tests
never touch each other's namespaces. NETSPECTRE_LAB_TEST_PREFIX picks another one, so two pytest
sessions on one machine do not tear down each other's lab.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

import netspectre.lab as netlab
from netspectre import system
from netspectre.lab import LabInfo, LabSpec

# Two exits (issue 10: concurrent clients on different circuits), the default; said here so the
# tests that need two do not depend on the default.
TEST_SPEC = LabSpec(prefix=os.environ.get("NETSPECTRE_LAB_TEST_PREFIX", "nslabt-"), exits=2)


def skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "the lab needs root (network namespaces)"
    for tool in ("ip", "tor", "tor-gencert", "sysctl"):
        if system.which(tool) is None:
            return f"the lab needs `{tool}` (apt install tor iproute2 procps)"
    return None


@pytest.fixture(scope="session")
def lab_spec() -> LabSpec:
    return TEST_SPEC


@pytest.fixture(scope="session")
def lab_possible() -> None:
    """Skips, with the reason, where no lab can be built."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def lab_up(lab_possible: None, lab_spec: LabSpec) -> Iterator[LabInfo]:
    """The lab, right after `up` returned (its onion service may still be publishing)."""
    netlab.down(lab_spec)  # leftovers of a crashed session
    try:
        yield netlab.up(lab_spec, wait_for_onion=False)
    finally:
        netlab.down(lab_spec)


@pytest.fixture(scope="session")
def lab(lab_up: LabInfo) -> LabInfo:
    """The lab with its onion service published: a client asking earlier gets 404s from every
    HSDir and then waits 15 minutes before asking again."""
    netlab.wait_onion(lab_up)
    return lab_up
