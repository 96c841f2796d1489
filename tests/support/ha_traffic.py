"""The opening of the HA pair tests: two nodes started in turn, and routing traffic running."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from support.ha_pair import Pair, Traffic, ready
from support.processes import ServerProcess
from support.wait import eventually


def active_and_standby(pair: Pair) -> tuple[ServerProcess, ServerProcess]:
    """Node ``a``, started first, routes; node ``b``, started next, is its standby."""
    a = pair.node("a")
    b = pair.node("b")
    assert ready(a) and not ready(b)
    return a, b


@contextmanager
def routing_traffic(pair: Pair, nodes: list[ServerProcess], **options: Any) -> Iterator[Traffic]:
    """Tasks created on ``nodes`` and taken by alice and bob, once five were accepted."""
    with Traffic(pair, nodes, experts=("alice", "bob"), **options) as traffic:
        eventually(lambda: len(traffic.accepted) >= 5, timeout=30)
        yield traffic
