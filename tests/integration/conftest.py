"""Fixtures for the firewall integration tests (see topology.py for the namespaces)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.topology import Topology, build_topology, skip_reason


@pytest.fixture(scope="module")
def topo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    yield from build_topology(tmp_path_factory.mktemp("netns"))


@pytest.fixture
def clean(topo: Topology) -> Iterator[Topology]:
    """The shared topology, reset (netspectre stopped, nothing of ours left) after the test."""
    yield topo
    topo.reset()
