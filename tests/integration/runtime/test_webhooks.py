"""callback_url webhooks: durable, retried with backoff until the receiver answers 2xx."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from rt_harness import Harness
from sqlalchemy import select

from expertline.db.tables import webhook_deliveries
from support.wait import async_eventually


class Receiver:
    """A real HTTP server on loopback that fails the first ``failures`` requests with 503."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.requests: list[dict[str, Any]] = []
        self.accepted: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                entry = {
                    "body": body,
                    "delivery": self.headers["X-Expertline-Delivery"],
                    "attempt": int(self.headers["X-Expertline-Attempt"]),
                }
                receiver.requests.append(entry)
                if len(receiver.requests) <= receiver.failures:
                    self.send_response(503)
                else:
                    receiver.accepted.append(entry)
                    self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def service_options() -> dict[str, Any]:
    return {"webhook_options": {"base_delay": 0.05, "max_delay": 0.2, "timeout": 2.0}}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver(failures=2) as r:
        yield r


async def test_webhooks_are_retried_until_answered_and_arrive_in_order(
    h: Harness, receiver: Receiver
) -> None:
    await h.presence("alice", "available")
    r = await h.create(callback_url=receiver.url, external_id="hooked")
    task_id = r.json()["id"]
    offer = (await h.open_offers("alice"))[0]
    await h.client.post(f"/api/v1/offers/{offer['id']}/accept", headers=h.ex)
    await h.event(task_id, "connected")
    await h.event(task_id, "ended")

    await async_eventually(
        lambda: [a["body"]["task"]["status"] for a in receiver.accepted][-1:] == ["completed"],
        timeout=15,
    )
    statuses = [a["body"]["task"]["status"] for a in receiver.accepted]
    assert statuses[0] in ("queued", "offered")
    assert statuses[-3:] == ["assigned", "connected", "completed"], receiver.requests
    assert receiver.requests[0]["delivery"] == receiver.requests[2]["delivery"]
    assert [q["attempt"] for q in receiver.requests[:3]] == [1, 2, 3]
    assigned = next(a for a in receiver.accepted if a["body"]["task"]["status"] == "assigned")
    assert assigned["body"]["task"]["label"] == "sip:1001@pbx.example.test"
    assert all(a["body"]["task"]["id"] == task_id for a in receiver.accepted)

    def all_delivered() -> list[Any]:
        with h.engine.connect() as conn:
            rows = conn.execute(select(webhook_deliveries).order_by(webhook_deliveries.c.id)).all()
        assert all(row.delivered_at is not None for row in rows)
        return list(rows)

    rows = await async_eventually(all_delivered, timeout=10)
    assert rows[0].attempts == 3 and rows[0].last_error == "HTTP 503"
    assert len(rows) == len(receiver.accepted)


async def test_unreachable_receiver_is_retried_then_given_up(h: Harness) -> None:
    h.service.webhooks._max_attempts = 3
    r = await h.create(callback_url="http://127.0.0.1:9/unreachable")
    task_id = r.json()["id"]

    def given_up() -> bool:
        with h.engine.connect() as conn:
            row = conn.execute(
                select(webhook_deliveries).where(webhook_deliveries.c.task_id == task_id)
            ).first()
        return row is not None and row.failed_at is not None and row.attempts == 3

    await async_eventually(given_up, timeout=15)
