"""Record feed webhooks against a real HTTP receiver: order, signatures, retries, and resuming
from the durable cursor after a restart (of the runtime, and of a killed node)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import signal
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from rt_harness import Harness, make_service, routing_config
from sqlalchemy import Engine

from expertline.config.store import apply_document
from expertline.config.validate import load_yaml
from expertline.db import migrate
from expertline.db.engine import make_engine
from expertline.feeds import cursors
from expertline.feeds.delivery import RecordFeeds
from expertline.feeds.signing import verify
from expertline.feeds.targets import RecordFeedTarget
from expertline.node import Node, StartupError
from expertline.runtime.ports import TaskRequest
from expertline.runtime.service import RuntimeService
from expertline.security.tokens import create_token
from expertline.settings import Settings
from support.databases import sqlite_url
from support.http_receiver import Receiver
from support.processes import running_server
from support.wait import async_eventually, eventually

SECRET = "whsec-0123456789abcdef"
FAST = {"base_delay": 0.05, "max_delay": 0.2, "timeout": 2.0, "poll": 0.2}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@pytest.fixture
def secret(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("EXPERTLINE_TEST_FEED_SECRET", SECRET)
    return SECRET


def target(url: str, feed_id: str = "cc", **options: Any) -> RecordFeedTarget:
    return RecordFeedTarget(
        id=feed_id, url=url, secret_env="EXPERTLINE_TEST_FEED_SECRET", **options
    )


async def _abandoned_tasks(service: RuntimeService, count: int) -> list[str]:
    """``count`` tasks created and abandoned: one TCD each."""
    ids = []
    for _ in range(count):
        view, _ = await service.async_create_task_ex(TaskRequest(queue="support"))
        await service.async_task_event(view.id, "abandoned", None)
        ids.append(view.id)
    return ids


async def test_records_arrive_in_order_signed(h: Harness, receiver: Receiver, secret: str) -> None:
    ids = await _abandoned_tasks(h.service, 7)  # written before the feed starts: 3 pages
    feeds = RecordFeeds(h.engine, [target(receiver.url, batch=3)], h.service, **FAST)
    await feeds.async_start()
    try:
        await async_eventually(lambda: len(receiver.items("tcd")) == 7, timeout=10)
        # and an RCD: an expert accepts a task
        await h.presence("carol", "available")
        task = (await h.create(entry_point="+18005550200")).json()
        [offer] = await async_eventually(lambda: h.open_offers("carol"), timeout=5)
        assert (await h.answer(offer, "accept")).status_code == 200
        await async_eventually(lambda: len(receiver.items("rcd")) == 1, timeout=10)
        acknowledged = {kind: receiver.items(kind)[-1]["recovery_key"] for kind in ("rcd", "tcd")}
        await async_eventually(lambda: cursors.load(h.engine, "cc") == acknowledged, timeout=5)
    finally:
        await feeds.async_stop()
    tcds = receiver.items("tcd")
    assert [r["task_id"] for r in tcds] == ids
    keys = [r["recovery_key"] for r in tcds]
    assert keys == sorted(keys) and len(set(keys)) == 7
    assert tcds == (await h.records("tcd"))[:7]  # the same records as GET /records/tcd
    [rcd] = receiver.items("rcd")
    assert rcd["task_id"] == task["id"] and rcd["expert_id"] == "carol"
    assert [len(e["body"]["items"]) for e in receiver.accepted if e["body"]["kind"] == "tcd"] == [
        3,
        3,
        1,
    ]
    for entry in receiver.accepted:
        # t=<unix>,v1=<hex of HMAC-SHA256(secret, "<t>." + body)>, computed here independently
        fields = dict(part.split("=", 1) for part in entry["signature"].split(","))
        expected = hmac.new(
            secret.encode(), fields["t"].encode() + b"." + entry["raw"], hashlib.sha256
        ).hexdigest()
        assert fields["v1"] == expected
        assert abs(int(fields["t"]) - time.time()) < 60
        assert verify(secret.encode(), entry["raw"], entry["signature"])
        assert not verify(b"another-secret-of-16+", entry["raw"], entry["signature"])
        assert not verify(secret.encode(), entry["raw"] + b" ", entry["signature"])
        assert entry["body"]["next"] == str(entry["body"]["items"][-1]["recovery_key"])
    assert acknowledged == {"tcd": keys[-1], "rcd": rcd["recovery_key"]}


async def test_a_failing_receiver_gets_the_same_page_again_and_blocks_no_other(
    h: Harness, receiver: Receiver, secret: str
) -> None:
    receiver.failing = 3
    with Receiver() as other:
        feeds = RecordFeeds(
            h.engine,
            [target(receiver.url, kinds=("tcd",)), target(other.url, "bi", kinds=("tcd",))],
            h.service,
            **FAST,
        )
        await feeds.async_start()
        try:
            ids = await _abandoned_tasks(h.service, 2)
            await async_eventually(lambda: len(other.items("tcd")) == 2, timeout=10)
            await async_eventually(lambda: len(receiver.items("tcd")) == 2, timeout=10)
        finally:
            await feeds.async_stop()
    assert [r["task_id"] for r in receiver.items("tcd")] == ids
    failed = receiver.requests[:3]
    assert [e["attempt"] for e in receiver.requests[:4]] == [1, 2, 3, 4]
    first = receiver.requests[3]  # the delivery that succeeded: the page that failed 3 times
    assert {e["delivery"] for e in failed} == {first["delivery"]}
    assert all(e["body"] == first["body"] for e in failed)
    assert receiver.requests[0]["delivery"].startswith("cc:tcd:")


async def test_delivery_resumes_from_the_cursor_after_a_restart(
    engine: Engine, receiver: Receiver, secret: str
) -> None:
    service = make_service(engine, routing_config())
    await service.async_start()
    feeds = RecordFeeds(engine, [target(receiver.url, kinds=("tcd",))], service, **FAST)
    await feeds.async_start()
    first = await _abandoned_tasks(service, 3)
    await async_eventually(lambda: len(receiver.items("tcd")) == 3, timeout=10)
    # the receiver goes down; more records are written; the node stops before delivering them
    receiver.failing = 10**6
    second = await _abandoned_tasks(service, 2)
    await async_eventually(lambda: len(receiver.requests) > 3, timeout=10)
    await feeds.async_stop()
    await service.async_stop()
    receiver.failing = 0

    service = make_service(engine, routing_config())
    await service.async_start()
    feeds = RecordFeeds(engine, [target(receiver.url, kinds=("tcd",))], service, **FAST)
    await feeds.async_start()
    try:
        third = await _abandoned_tasks(service, 2)
        await async_eventually(lambda: len(receiver.items("tcd")) == 7, timeout=10)
    finally:
        await feeds.async_stop()
        await service.async_stop()
    delivered = [r["task_id"] for r in receiver.items("tcd")]
    assert delivered == first + second + third  # nothing lost, nothing sent twice, in order


async def test_the_backlog_of_each_target_is_a_metric(
    h: Harness, receiver: Receiver, secret: str
) -> None:
    receiver.failing = 10**6
    await _abandoned_tasks(h.service, 2)
    feeds = RecordFeeds(h.engine, [target(receiver.url, "icm")], h.service, **FAST)
    h.app.state.ctx.services.record_feeds = feeds
    await feeds.async_start()
    try:
        await async_eventually(lambda: len(receiver.requests) >= 1, timeout=10)
        metrics = (await h.client.get("/metrics")).text
        assert 'expertline_webhook_backlog{target="feed:icm"} 2.0' in metrics
        receiver.failing = 0

        async def caught_up() -> bool:
            metrics = (await h.client.get("/metrics")).text
            return 'expertline_webhook_backlog{target="feed:icm"} 0.0' in metrics

        await async_eventually(caught_up, timeout=10)
        assert len(receiver.items("tcd")) == 2
    finally:
        await feeds.async_stop()


async def test_a_standby_delivers_nothing(h: Harness, receiver: Receiver, secret: str) -> None:
    await _abandoned_tasks(h.service, 1)
    await h.service.async_stop()  # as on the standby of a pair: the runtime does not run
    feeds = RecordFeeds(h.engine, [target(receiver.url)], h.service, **FAST)
    await feeds.async_start()
    try:
        await asyncio.sleep(5 * FAST["poll"])  # several looks: none finds an active runtime
        assert receiver.requests == []
        assert all(lane.cursor is None and lane.delivered == 0 for lane in feeds.lanes)
    finally:
        await feeds.async_stop()


def test_a_missing_or_short_secret_stops_the_start_with_its_name(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EXPERTLINE_TEST_FEED_SECRET", raising=False)
    with pytest.raises(
        ValueError, match=r"EXPERTLINE_TEST_FEED_SECRET \(its HMAC secret\) is not set"
    ):
        RecordFeeds(engine, [target("http://127.0.0.1:9/")])
    monkeypatch.setenv("EXPERTLINE_TEST_FEED_SECRET", "short")
    with pytest.raises(ValueError, match="shorter than 16 bytes"):
        RecordFeeds(engine, [target("http://127.0.0.1:9/")])
    monkeypatch.setenv("EXPERTLINE_TEST_FEED_SECRET", SECRET)
    with pytest.raises(ValueError, match="unique: cc"):
        RecordFeeds(engine, [target("http://127.0.0.1:9/"), target("http://127.0.0.1:9/")])


def test_the_setting_is_read_from_the_environment_and_checked(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    feeds = [{"id": "icm", "url": "http://127.0.0.1:9/records", "secret_env": "ICM_FEED_SECRET"}]
    monkeypatch.setenv("EXPERTLINE_RECORD_FEEDS", json.dumps(feeds))
    settings = Settings(node="n1", data_dir=tmp_path, presence=False)
    assert [(t.id, t.kinds) for t in settings.record_feeds] == [("icm", ("rcd", "tcd"))]
    node = Node(settings, engine)
    with pytest.raises(StartupError, match="ICM_FEED_SECRET"):
        node.build()
    monkeypatch.setenv("ICM_FEED_SECRET", SECRET)
    node = Node(settings, engine)
    node.build()
    assert "record_feeds" in [name for name, _ in node.services]
    assert node.ctx.services.record_feeds.lanes[0].target.id == "icm"
    monkeypatch.setenv("EXPERTLINE_RECORD_FEEDS", json.dumps([{**feeds[0], "url": "ftp://x/"}]))
    with pytest.raises(ValidationError, match="url must be an absolute http"):
        Settings(node="n1", data_dir=tmp_path)


NODE_CONFIG = """
experts:
  - {id: alice, name: Alice, phone: "sip:1001@pbx.example.test"}
queues:
  - {id: billing, name: Billing, select: "true"}
entry_points:
  - {dialed_number: "+18005550100", queue: billing}
"""


def test_a_killed_node_resumes_its_feed_where_the_target_left_off(
    tmp_path: Any, receiver: Receiver, secret: str
) -> None:
    """``expertline serve`` with a feed target: SIGKILL mid-way, restart, nothing lost."""
    url = sqlite_url(tmp_path)
    engine = make_engine(url)
    migrate.upgrade(engine)
    apply_document(engine, load_yaml(NODE_CONFIG), "cli:test", source="import")
    token = create_token(engine, "cc", "routing-client")
    engine.dispose()
    feeds = [{"id": "cc", "url": receiver.url, "secret_env": "EXPERTLINE_TEST_FEED_SECRET"}]
    env = {
        "EXPERTLINE_DB": url,
        "EXPERTLINE_DATA_DIR": str(tmp_path / "data"),
        "EXPERTLINE_RECORD_FEEDS": json.dumps(feeds),
        "EXPERTLINE_TEST_FEED_SECRET": secret,
    }
    auth = {"Authorization": f"Bearer {token}"}

    def abandon(base_url: str, count: int) -> list[str]:
        ids = []
        with httpx.Client(base_url=base_url, headers=auth, timeout=30) as http:
            for _ in range(count):
                task = http.post("/api/v1/tasks", json={"entry_point": "+18005550100"}).json()
                r = http.post(f"/api/v1/tasks/{task['id']}/events", json={"type": "abandoned"})
                assert r.status_code == 200, r.text
                ids.append(task["id"])
        return ids

    with running_server(tmp_path, "--no-presence", env=env, ready_path="/readyz") as node:
        first = abandon(node.base_url, 3)
        eventually(lambda: len(receiver.items("tcd")) == 3, timeout=60)
        receiver.failing = 10**6  # the target goes down; the node is killed before it is back
        second = abandon(node.base_url, 2)
        eventually(lambda: len(receiver.requests) > 3, timeout=60)
        node.stop(signal.SIGKILL)
    receiver.failing = 0
    with running_server(tmp_path, "--no-presence", env=env, ready_path="/readyz") as node:
        third = abandon(node.base_url, 1)
        eventually(lambda: len(receiver.items("tcd")) == 6, timeout=60)
        assert node.stop() == 0
    assert [r["task_id"] for r in receiver.items("tcd")] == first + second + third
    for entry in receiver.accepted:
        assert verify(secret.encode(), entry["raw"], entry["signature"])
