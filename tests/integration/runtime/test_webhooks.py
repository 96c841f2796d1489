"""callback_url webhooks: durable, retried with backoff until the receiver answers 2xx."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from rt_harness import Harness
from sqlalchemy import Engine, insert, select

from expertline.db.engine import as_utc
from expertline.db.tables import webhook_deliveries
from expertline.runtime.webhooks import WebhookSender
from support.http_receiver import Receiver
from support.wait import async_eventually


@pytest.fixture
def service_options() -> dict[str, Any]:
    return {"webhook_options": {"base_delay": 0.05, "max_delay": 0.2, "timeout": 2.0}}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver("/hook", failing=2, status=200) as r:
        yield r


async def test_webhooks_are_retried_until_answered_and_arrive_in_order(
    h: Harness, receiver: Receiver
) -> None:
    await h.presence("alice", "available")
    r = await h.create(callback_url=receiver.url, external_id="hooked")
    task_id = r.json()["id"]
    offer = (await h.open_offers("alice"))[0]
    await h.answer(offer, "accept")
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


BAD_URLS = ("http://[::1", "http://h:99999/", "http://:80/x", "ftp://h/", "http://[zz]/")


def _store_deliveries(engine: Engine, urls: list[str]) -> None:
    """Deliveries as earlier releases stored them (their edge let such URLs through)."""
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(
            insert(webhook_deliveries),
            [
                {
                    "id": i + 1,
                    "task_id": f"t{i + 1:04d}",
                    "url": url,
                    "body": {"task": {"id": f"t{i + 1:04d}", "status": "queued"}},
                    "created_at": now,
                    "attempts": 0,
                    "next_attempt_at": now,
                }
                for i, url in enumerate(urls)
            ],
        )


def _deliveries(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(webhook_deliveries).order_by(webhook_deliveries.c.id)))


async def test_undeliverable_stored_deliveries_never_block_a_good_one(engine: Engine) -> None:
    """200 stored deliveries whose request cannot even be built (a whole scan's worth),
    then a good one: the good one goes out at once; each bad one counts an attempt and waits
    its backoff."""
    bad = ["http://[::1"] * 200
    with Receiver("/hook", status=200) as good:
        _store_deliveries(engine, [*bad, good.url])
        sender = WebhookSender(engine, base_delay=60.0, max_delay=60.0, timeout=2.0)
        await sender.async_start()
        try:
            await async_eventually(lambda: len(good.accepted) == 1, timeout=5)
            assert good.accepted[0]["delivery"] == "201"

            def every_bad_one_counted() -> list[Any]:
                rows = _deliveries(engine)[:200]
                assert all(r.attempts == 1 and r.last_error for r in rows), rows[:3]
                return rows

            rows = await async_eventually(every_bad_one_counted, timeout=10)
            now = datetime.now(UTC)
            assert all(as_utc(r.next_attempt_at) > now + timedelta(seconds=20) for r in rows)
            assert all(r.failed_at is None and r.delivered_at is None for r in rows)
            assert "InvalidURL" in rows[0].last_error
        finally:
            await sender.async_stop()


async def test_an_undeliverable_delivery_is_given_up_after_its_attempts(engine: Engine) -> None:
    _store_deliveries(engine, list(BAD_URLS))
    sender = WebhookSender(engine, base_delay=0.02, max_delay=0.05, max_attempts=3)
    await sender.async_start()
    try:

        def all_given_up() -> bool:
            rows = _deliveries(engine)
            return all(r.failed_at is not None and r.attempts == 3 for r in rows)

        await async_eventually(all_given_up, timeout=15)
    finally:
        await sender.async_stop()
