"""The database's own failover: a PostgreSQL primary with a synchronous streaming replica
(``support.replication``), two runtime nodes on the multi-host URL, traffic running.

The primary is killed (kill -9 of every process of it, as a host that dies) and the replica
promoted, as a failover manager would. The nodes reconnect to the new primary without a
restart; every task whose creation was acknowledged is there (the replica had it before the
acknowledgement) and ends with exactly one TCD; no task is assigned twice, even when the
active node is paused past its lease during the promotion.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from support.ha_pair import Pair, Traffic, ready, state
from support.ha_traffic import active_and_standby, routing_traffic
from support.processes import ServerProcess
from support.replication import ReplicatedPostgres, replicated_postgres
from support.wait import eventually

pytestmark = pytest.mark.postgres

PROMOTION_DELAY = 1.0  # what a failover manager takes to decide, at the least


@pytest.fixture
def cluster() -> Iterator[ReplicatedPostgres]:
    with replicated_postgres() as c:
        yield c


@pytest.fixture
def pair(cluster: ReplicatedPostgres, tmp_path: Path) -> Iterator[Pair]:
    with ExitStack() as stack:
        yield Pair(cluster.url, tmp_path, stack)


def fail_over(cluster: ReplicatedPostgres) -> None:
    """What a failover manager does: the primary dies; it notices, decides, and promotes."""
    cluster.kill_primary()
    time.sleep(PROMOTION_DELAY)
    cluster.promote_replica()


def active(pair: Pair, *nodes: ServerProcess) -> ServerProcess | None:
    up = [n for n in nodes if n.proc.poll() is None and ready(n)]
    assert len(up) <= 1, "two active nodes"
    return up[0] if up else None


def check_every_task_ends_once(pair: Pair, traffic: Traffic, node: ServerProcess) -> None:
    everything = pair.task_ids()
    missing = set(traffic.acked) - everything
    assert not missing, f"acknowledged, then lost in the promotion: {sorted(missing)}"
    pair.client(node).finish(everything)
    assert pair.tcd_counts() == dict.fromkeys(everything, 1)
    assert set(pair.rcd_counts().values()) <= {1}
    assert set(pair.assigned_counts().values()) <= {1}  # no task assigned twice
    assert all(len(experts) == 1 for experts in traffic.accepted.values()), traffic.accepted


def test_a_promoted_replica_takes_over_and_nothing_acknowledged_is_lost(
    cluster: ReplicatedPostgres, pair: Pair
) -> None:
    a, b = active_and_standby(pair)
    with routing_traffic(pair, [a, b]) as traffic:
        killed = time.monotonic()
        fail_over(cluster)
        resumed = eventually(lambda: traffic.acked_after(killed), timeout=60, interval=0.02)
        eventually(lambda: len(traffic.acked_after(killed)) >= 20, timeout=60)
        print(f"routing resumed {resumed[0][1] - killed:.2f} s after the primary was killed")
    # Neither node was restarted; exactly one of them routes, on the new primary.
    assert a.proc.poll() is None and b.proc.poll() is None
    now_active = eventually(lambda: active(pair, a, b), timeout=30)
    assert {state(a, pair), state(b, pair)} == {"active", "standby"}
    logs = a.log() + b.log()
    assert "database connection lost" in logs or "database unreachable" in logs
    assert f"database connected again host=127.0.0.1 port={cluster.replica.port}" in logs
    check_every_task_ends_once(pair, traffic, now_active)


def test_a_node_paused_past_its_lease_during_the_promotion_assigns_nothing_twice(
    cluster: ReplicatedPostgres, pair: Pair
) -> None:
    a, b = active_and_standby(pair)
    with routing_traffic(pair, [a, b]) as traffic:
        a.proc.send_signal(signal.SIGSTOP)  # a believes it is active throughout
        try:
            fail_over(cluster)
            # b takes the lease once a's grant lapsed: a is paused past its lease.
            eventually(lambda: ready(b), timeout=60, interval=0.05)
            since = time.monotonic()
            eventually(lambda: len(traffic.acked_after(since)) >= 5, timeout=60)
        finally:
            a.proc.send_signal(signal.SIGCONT)
        # a wakes with requests in its sockets and a runtime that thinks it routes: its
        # commits are refused, it steps down.
        eventually(lambda: state(a, pair) == "standby", timeout=30)
        since = time.monotonic()
        eventually(lambda: len(traffic.acked_after(since)) >= 10, timeout=60)
    assert "ha node=a action=step-down: stepping down" in a.log()
    assert active(pair, a, b) is b
    check_every_task_ends_once(pair, traffic, b)


def test_calls_during_the_promotion_get_a_prompt_503_never_a_hang(
    cluster: ReplicatedPostgres, pair: Pair
) -> None:
    a, b = active_and_standby(pair)
    answers: list[tuple[str, float, int | str]] = []  # (node, seconds to answer, status)

    def call(node: ServerProcess) -> None:
        client = pair.client(node)
        client.http.timeout = httpx.Timeout(30)
        sent = time.monotonic()
        try:
            status: int | str = client.post_task(queue="support").status_code
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        answers.append((node.base_url, time.monotonic() - sent, status))

    assert pair.client(a).post_task(queue="support").status_code == 201
    assert pair.client(b).post_task(queue="support").status_code == 503
    cluster.kill_primary()
    calls = []
    outage = time.monotonic() + 8.0  # a failover manager that takes its time
    while time.monotonic() < outage:
        for node in (a, b):
            calls.append(threading.Thread(target=call, args=(node,)))
            calls[-1].start()
        time.sleep(0.25)
    cluster.promote_replica()
    for thread in calls:
        thread.join(timeout=60)
    assert {status for _, _, status in answers} == {503}, answers
    slowest = max(seconds for _, seconds, _ in answers)
    assert slowest < 3.0, sorted(answers, key=lambda x: -x[1])[:5]
