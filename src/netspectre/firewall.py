"""Transitional: the old function API over the `netspectre.backends` firewall objects.

Kept only so that commands.py and lab/ work while they move to `backends.open()` /
`backends.detect()`; this module will be deleted then. Add nothing here.
"""

from __future__ import annotations

from netspectre import backends
from netspectre.backends import Backend, Script
from netspectre.errors import Error
from netspectre.policy import Policy


def detect(wanted: str) -> tuple[Backend, str]:
    firewall, evidence = backends.detect(wanted)
    return firewall.backend, evidence


def render(backend: Backend, policy: Policy) -> tuple[Script, ...]:
    return backends.open(backend).render(policy)


def apply(backend: Backend, policy: Policy) -> None:
    backends.open(backend).apply(policy)


def remove(backend: Backend) -> None:
    backends.open(backend).remove()


def remove_everywhere(first: Backend | None) -> list[Error]:
    return backends.remove_everywhere(first)


def active(backend: Backend) -> bool:
    return backends.open(backend).present()


def counters(backend: Backend) -> dict[str, dict[str, int]]:
    return backends.open(backend).counters()


def ours(backend: Backend) -> str:
    return backends.open(backend).listing()


def expected(backend: Backend, policy: Policy) -> str:
    return backends.open(backend).expected(policy)


def absent_builtins(backend: Backend) -> list[str]:
    return list(backends.open(backend).absent_builtins())


def remove_created(created: list[str]) -> list[Error]:
    return backends.remove_created(created)
