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
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, func, select

from expertline.db.engine import make_engine
from expertline.db.tables import runtime_tasks, tcd
from expertline.security.tokens import create_token
from support.databases import postgres_database
from support.processes import ServerProcess, cli, running_server
from support.wait import eventually

pytestmark = pytest.mark.postgres

TTL = 2.0
CONFIG = """
attributes:
  - {name: billing, type: proficiency}
  - {name: support, type: boolean}
experts:
  - {id: alice, name: Alice, im: alice@example.test, phone: "sip:1001@pbx.example.test",
     attributes: {billing: 80}}
  - {id: bob, name: Bob, im: bob@example.test, phone: "sip:1002@pbx.example.test",
     attributes: {billing: 60}}
  - {id: carol, name: Carol, im: carol@example.test, phone: "sip:1003@pbx.example.test",
     attributes: {support: true}}
queues:
  - {id: billing, name: Billing, select: "billing >= 50", offer_to: 2, offer_timeout: 1h}
  - {id: support, name: Support, select: "support", offer_timeout: 1h}
"""


class Pair:
    """The database, its tokens, and a way to start runtime nodes on it."""

    def __init__(self, url: str, tmp: Path, stack: ExitStack) -> None:
        self.url, self.tmp, self.stack = url, tmp, stack
        cli("--db", url, "db", "upgrade", check=True)
        (tmp / "config.yaml").write_text(CONFIG)
        cli("--db", url, "config", "import", str(tmp / "config.yaml"), check=True)
        self.engine: Engine = make_engine(url)
        stack.callback(self.engine.dispose)
        self.rc = {"Authorization": f"Bearer {create_token(self.engine, 'cc', 'routing-client')}"}
        self.ex = {"Authorization": f"Bearer {create_token(self.engine, 'xp', 'expert')}"}

    def node(self, name: str) -> ServerProcess:
        env = {
            "EXPERTLINE_DB": self.url,
            "EXPERTLINE_HA_LEASE_TTL": str(TTL),
            "EXPERTLINE_HA_POLL": "0.1",
        }
        args = ("--role", "runtime", "--node", name)
        return self.stack.enter_context(running_server(self.tmp, *args, env=env))

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
    return str(
        httpx.get(node.base_url + "/api/v1/status", headers=pair.rc, timeout=5).json()["state"]
    )


class Api:
    def __init__(self, node: ServerProcess, pair: Pair) -> None:
        self.http = httpx.Client(base_url=node.base_url, timeout=30)
        self.pair = pair

    def create(self, queue: str, **extra: Any) -> httpx.Response:
        return self.http.post("/api/v1/tasks", json={"queue": queue, **extra}, headers=self.pair.rc)

    def task(self, task_id: str) -> dict[str, Any]:
        r = self.http.get(f"/api/v1/tasks/{task_id}", headers=self.pair.rc)
        assert r.status_code == 200, r.text
        return dict(r.json())

    def presence(self, expert: str, status: str) -> None:
        r = self.http.put(
            f"/api/v1/experts/{expert}/presence", json={"status": status}, headers=self.pair.ex
        )
        assert r.status_code == 200, r.text

    def offers(self, expert: str) -> list[dict[str, Any]]:
        r = self.http.get(f"/api/v1/offers?expert={expert}", headers=self.pair.ex)
        assert r.status_code == 200, r.text
        return list(r.json()["items"])

    def event(self, task_id: str, type: str) -> dict[str, Any]:
        r = self.http.post(
            f"/api/v1/tasks/{task_id}/events", json={"type": type}, headers=self.pair.rc
        )
        assert r.status_code == 200, r.text
        return dict(r.json())

    def finish(self, task_ids: set[str]) -> None:
        """Drive every task to its end: experts available, offers accepted, calls ended."""
        for expert in ("alice", "bob", "carol"):
            self.presence(expert, "available")
        pending = set(task_ids)

        def step() -> bool:
            for expert in ("alice", "bob", "carol"):
                for offer in self.offers(expert):
                    self.http.post(f"/api/v1/offers/{offer['id']}/accept", headers=self.pair.ex)
            for tid in sorted(pending):
                status = self.task(tid)["status"]
                if status == "assigned":
                    status = self.event(tid, "connected")["status"]
                if status == "connected":
                    status = self.event(tid, "ended")["status"]
                if status == "completed":
                    pending.discard(tid)
            return not pending

        eventually(step, timeout=60, interval=0.05)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    with postgres_database() as url, ExitStack() as stack:
        yield Pair(url, tmp_path, stack)


def test_the_standby_takes_over_a_killed_node_and_continues_its_tasks(pair: Pair) -> None:
    a = pair.node("a")
    assert ready(a) and state(a, pair) == "active"
    b = pair.node("b")
    assert not ready(b) and state(b, pair) == "standby"
    refused = Api(b, pair).create("billing")
    assert refused.status_code == 503, refused.text  # the standby routes nothing

    on_a = Api(a, pair)
    on_a.presence("alice", "available")
    connected = on_a.create("billing").json()["id"]
    (offer,) = on_a.offers("alice")
    assert (
        on_a.http.post(f"/api/v1/offers/{offer['id']}/accept", headers=pair.ex).status_code == 200
    )
    on_a.event(connected, "connected")
    on_a.presence("bob", "available")
    offered = on_a.create("billing").json()["id"]  # offered to bob (alice is on a call)
    waiting = on_a.create("support").json()["id"]  # carol is offline
    before = {tid: on_a.task(tid)["status"] for tid in (connected, offered, waiting)}
    assert before == {connected: "connected", offered: "offered", waiting: "queued"}

    killed = time.monotonic()
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait(timeout=10)
    eventually(lambda: ready(b), timeout=30, interval=0.05)
    took = time.monotonic() - killed
    assert took < 4 * TTL, took  # the lease lapses, the standby takes it at its next poll

    on_b = Api(b, pair)
    assert {tid: on_b.task(tid)["status"] for tid in before} == before
    assert [o["task_id"] for o in on_b.offers("bob")] == [offered]
    on_b.finish(set(before))
    assert pair.tcd_counts() == dict.fromkeys(before, 1)
    assert "lease acquired node=b token=2" in b.log()


def test_a_graceful_stop_hands_over_and_a_paused_node_is_fenced(pair: Pair) -> None:
    a = pair.node("a")
    b = pair.node("b")
    assert ready(a) and not ready(b)
    first = Api(a, pair).create("support").json()["id"]

    a.stop(signal.SIGTERM)  # drains, commits, releases the lease
    eventually(lambda: ready(b), timeout=TTL, interval=0.05)  # before it could have lapsed
    assert "lease released node=a token=1" in a.log()
    a = pair.node("a")  # back, as the standby
    assert state(a, pair) == "standby"

    # b stops for longer than its lease: a takes over while b still believes it is active.
    b.proc.send_signal(signal.SIGSTOP)
    try:
        eventually(lambda: ready(a), timeout=30, interval=0.05)
        answer: list[httpx.Response] = []
        late = threading.Thread(
            target=lambda: answer.append(Api(b, pair).create("support", external_id="late"))
        )
        late.start()  # waits in b's socket until b runs again
    finally:
        b.proc.send_signal(signal.SIGCONT)
    late.join(timeout=30)
    assert answer[0].status_code == 503, answer[0].text  # refused, not lost: nothing was kept
    eventually(lambda: state(b, pair) == "standby", timeout=10)
    assert "leaving the active role node=b" in b.log()

    on_a = Api(a, pair)
    second = on_a.create("support").json()["id"]
    on_a.finish({first, second})
    assert pair.tcd_counts() == {first: 1, second: 1}
    assert pair.task_ids() == {first, second}
