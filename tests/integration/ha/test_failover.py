"""Two real ``expertline serve`` runtime nodes on one PostgreSQL database (SPEC §8).

Exactly one is active; the other answers 503 and takes over when the active one is killed
(kill -9), stops gracefully, or is paused past its lease, continuing every task in flight.
Every task ends with exactly one TCD.
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
from sqlalchemy import Engine, func, select

from expertline.db.engine import make_engine
from expertline.db.tables import runtime_tasks, tcd
from expertline.security.tokens import create_token
from support.databases import postgres_database
from support.processes import ServerProcess, cli, running_server
from support.runtime_client import TWO_QUEUES_YAML, RuntimeClient
from support.wait import eventually

pytestmark = pytest.mark.postgres

TTL = 2.0


class Pair:
    """The database, its tokens, and a way to start runtime nodes on it."""

    def __init__(self, url: str, tmp: Path, stack: ExitStack) -> None:
        self.url, self.tmp, self.stack = url, tmp, stack
        cli("--db", url, "db", "upgrade", check=True)
        (tmp / "config.yaml").write_text(TWO_QUEUES_YAML)
        cli("--db", url, "config", "import", str(tmp / "config.yaml"), check=True)
        self.engine: Engine = make_engine(url)
        stack.callback(self.engine.dispose)
        self.tokens = (
            create_token(self.engine, "cc", "routing-client"),
            create_token(self.engine, "integration", "admin"),  # acts for every expert
        )

    def node(self, name: str, ttl: float = TTL) -> ServerProcess:
        env = {
            "EXPERTLINE_DB": self.url,
            "EXPERTLINE_HA_LEASE_TTL": str(ttl),
            "EXPERTLINE_HA_POLL": "0.1",
        }
        args = ("--role", "runtime", "--node", name)
        return self.stack.enter_context(running_server(self.tmp, *args, env=env))

    def client(self, node: ServerProcess) -> RuntimeClient:
        return RuntimeClient(node.base_url, *self.tokens)

    def tcd_counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(tcd.c.task_id, func.count()).group_by(tcd.c.task_id))
            return {task_id: n for task_id, n in rows}

    def task_ids(self) -> set[str]:
        with self.engine.connect() as conn:
            return set(conn.execute(select(runtime_tasks.c.task_id)).scalars())


def ready(node: ServerProcess) -> bool:
    return httpx.get(node.base_url + "/readyz", timeout=5).status_code == 200


def state(node: ServerProcess, pair: Pair) -> str:
    client = pair.client(node)
    return str(client.http.get("/api/v1/status", headers=client.rc).json()["state"])


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    with postgres_database() as url, ExitStack() as stack:
        yield Pair(url, tmp_path, stack)


def test_the_standby_takes_over_a_killed_node_and_continues_its_tasks(pair: Pair) -> None:
    a = pair.node("a")
    assert ready(a) and state(a, pair) == "active"
    b = pair.node("b")
    assert not ready(b) and state(b, pair) == "standby"
    metrics = {n: httpx.get(n.base_url + "/metrics", timeout=5).text for n in (a, b)}
    assert 'expertline_component_up{component="lease"} 1.0' in metrics[a]
    assert 'expertline_component_up{component="lease"} 0.0' in metrics[b]
    refused = pair.client(b).post_task(queue="billing")
    assert refused.status_code == 503, refused.text  # the standby routes nothing
    assert refused.json()["error"]["message"] == (
        "node b is the standby of an HA pair: send routing requests to the active node"
    )

    on_a = pair.client(a)
    on_a.presence("alice", "available")
    connected = on_a.create(queue="billing")["id"]
    (offer,) = on_a.offers("alice")
    on_a.accept(offer["id"])
    on_a.event(connected, "connected")
    on_a.presence("bob", "available")
    offered = on_a.create(queue="billing")["id"]  # offered to bob (alice is on a call)
    waiting = on_a.create(queue="support")["id"]  # carol is offline
    before = {tid: on_a.task(tid)["status"] for tid in (connected, offered, waiting)}
    assert before == {connected: "connected", offered: "offered", waiting: "queued"}

    killed = time.monotonic()
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait(timeout=10)
    eventually(lambda: ready(b), timeout=30, interval=0.05)
    took = time.monotonic() - killed
    assert took < 4 * TTL, took  # the lease lapses, the standby takes it at its next poll

    on_b = pair.client(b)
    assert {tid: on_b.task(tid)["status"] for tid in before} == before
    assert [o["task_id"] for o in on_b.offers("bob")] == [offered]
    on_b.finish(set(before))
    assert pair.tcd_counts() == dict.fromkeys(before, 1)
    assert "lease acquired node=b token=2 previous=a" in b.log()


def test_a_graceful_stop_hands_over_and_a_paused_node_is_fenced(pair: Pair) -> None:
    a = pair.node("a", ttl=60)
    b = pair.node("b")
    assert ready(a) and not ready(b)
    first = pair.client(a).create(queue="support")["id"]

    a.stop(signal.SIGTERM)  # drains, commits, releases the lease
    # a's grant lasts a minute: b can only be this quick because a released it.
    eventually(lambda: ready(b), timeout=20, interval=0.05)
    assert "lease released node=a token=1" in a.log()
    a = pair.node("a")  # back, as the standby
    assert state(a, pair) == "standby"

    # b stops for longer than its lease: a takes over while b still believes it is active.
    b.proc.send_signal(signal.SIGSTOP)
    try:
        eventually(lambda: ready(a), timeout=30, interval=0.05)
        answer: list[httpx.Response] = []
        late = threading.Thread(
            target=lambda: answer.append(
                pair.client(b).post_task(queue="support", external_id="late")
            )
        )
        late.start()  # waits in b's socket until b runs again
    finally:
        b.proc.send_signal(signal.SIGCONT)
    late.join(timeout=30)
    assert answer[0].status_code == 503, answer[0].text  # refused, not lost: nothing was kept
    eventually(lambda: state(b, pair) == "standby", timeout=10)
    assert "leaving the active role node=b" in b.log()

    on_a = pair.client(a)
    second = on_a.create(queue="support")["id"]
    on_a.finish({first, second})
    assert pair.tcd_counts() == {first: 1, second: 1}
    assert pair.task_ids() == {first, second}
