"""A change the database refuses never stops routing.

A test-only constraint on ``runtime_tasks`` (a trigger on SQLite, a CHECK constraint on
PostgreSQL) refuses the rows of tasks whose caller is a marker value. The batch holding such a
row is refused as a whole; the runtime must refuse that one change (to its caller, or end its
task when it has none) and commit every other one, and keep routing.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from rt_harness import (
    PHONES,
    FakeClock,
    make_service,
    polling_service,
    routing_config,
    without_queue,
)
from sqlalchemy import Engine, func, select, text

from expertline.db.tables import routing_feed, runtime_tasks, tcd, webhook_deliveries
from expertline.errors import InvalidInput
from expertline.health import Health
from expertline.routing.model import ExpertSpec
from expertline.routing.timers import TimerKey, TimerKind
from expertline.runtime.ports import OfferView, TaskRequest
from expertline.runtime.service import RuntimeService
from expertline.runtime.writer import ProcessWriter, ThreadWriter
from expertline.security.tokens import create_token
from expertline.settings import Settings
from expertline.web.app import AppContext, create_app
from support.wait import async_eventually

POISON = "+1555POISON"
REFUSAL = "poisoned row refused by a test constraint"  # SQLite: the trigger's message


def refusal(engine: Engine) -> str:
    """What the database says when it refuses a poisoned row."""
    if engine.dialect.name == "sqlite":
        return REFUSAL
    return 'violates check constraint "test_poison"'


def refuse_rows(engine: Engine, status: str | None = None, unless: str | None = None) -> None:
    """Make the database refuse the ``runtime_tasks`` rows of tasks whose caller is ``POISON``:
    every one, only those with ``status``, or all but those with status ``unless``."""
    if engine.dialect.name == "sqlite":
        when = f"json_extract(NEW.state, '$.caller') = '{POISON}'"
        when += f" AND NEW.status = '{status}'" if status else ""
        when += f" AND NEW.status <> '{unless}'" if unless else ""
        with engine.begin() as conn:
            for change in ("INSERT", "UPDATE"):
                conn.execute(
                    text(
                        f"CREATE TRIGGER test_poison_{change.lower()} BEFORE {change} "
                        f"ON runtime_tasks WHEN {when} "
                        f"BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END"
                    )
                )
        return
    allowed = f"(state->>'caller') IS DISTINCT FROM '{POISON}'"
    allowed += f" OR status <> '{status}'" if status else ""
    allowed += f" OR status = '{unless}'" if unless else ""
    with engine.begin() as conn:
        conn.execute(
            text(f"ALTER TABLE runtime_tasks ADD CONSTRAINT test_poison CHECK ({allowed})")
        )


class RecordingChannel:
    """An expert channel that records every effect it is asked to perform."""

    name = "im"

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []  # (kind, expert, task id)

    def reaches(self, expert: ExpertSpec) -> bool:
        return True

    async def async_offer(self, offer: OfferView) -> None:
        self.calls.append(("offer", offer.expert_id, offer.task_id))

    async def async_withdrawn(self, offer: OfferView, reason: str) -> None:
        self.calls.append(("withdrawn", offer.expert_id, offer.task_id))

    async def async_accepted(self, offer: OfferView) -> None:
        self.calls.append(("accepted", offer.expert_id, offer.task_id))

    async def async_notice(self, expert: ExpertSpec, message: str, count: int = 0) -> None:
        self.calls.append(("notice", expert.id, ""))

    def resync_presence(self) -> None:
        return None


@dataclass
class Node:
    service: RuntimeService
    client: httpx.AsyncClient
    health: Health
    channel: RecordingChannel
    clock: FakeClock
    rc: dict[str, str]
    ex: dict[str, str]

    async def create(self, timeout: float = 15.0, **body: Any) -> httpx.Response:
        body.setdefault("entry_point", "+18005550200")  # support: offered to carol
        content = json.dumps(body)  # NaN and Infinity as the JSON tokens some clients send
        headers = {**self.rc, "Content-Type": "application/json"}
        return await asyncio.wait_for(
            self.client.post("/api/v1/tasks", content=content, headers=headers), timeout
        )

    async def ready(self) -> bool:
        r = await self.client.get("/readyz")
        return r.status_code == 200 and bool(r.json()["components"]["runtime"]["up"])

    async def request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        """A request that must be answered within 15 s (a stalled runtime never answers)."""
        return await asyncio.wait_for(self.client.request(method, url, **kw), 15)

    async def routes_end_to_end(self) -> str:
        """A new task is offered to carol, accepted, connected and completed (TCD 13); returns
        its id."""
        presence = {"status": "available"}
        r = await self.request(
            "PUT", "/api/v1/experts/carol/presence", json=presence, headers=self.ex
        )
        assert r.status_code == 200, r.text
        r = await self.create(caller="+15550001111")
        assert r.status_code == 201, r.text
        task_id = r.json()["id"]
        offers = await self.request("GET", "/api/v1/offers?expert=carol", headers=self.ex)
        (offer,) = [o for o in offers.json()["items"] if o["task_id"] == task_id]
        r = await self.request("POST", f"/api/v1/offers/{offer['id']}/accept", headers=self.ex)
        assert r.status_code == 200, r.text
        for kind, status in (("connected", "connected"), ("ended", "completed")):
            event = {"type": kind}
            r = await self.request(
                "POST", f"/api/v1/tasks/{task_id}/events", json=event, headers=self.rc
            )
            assert r.status_code == 200 and r.json()["status"] == status, r.text
        assert ("accepted", "carol", task_id) in self.channel.calls
        return task_id


@pytest.fixture
async def node(engine: Engine) -> AsyncIterator[Node]:
    clock = FakeClock()
    health = Health()
    channel = RecordingChannel()
    service = make_service(engine, routing_config(), clock=clock, health=health)
    service.register_channel(channel)
    await service.async_start()
    ctx = AppContext(Settings(node="test-node"), engine)
    ctx.services.runtime, ctx.services.health = service, health
    app = create_app(ctx)
    rc = {"Authorization": f"Bearer {create_token(engine, 'cc', 'routing-client')}"}
    # an integration acting for the experts (this configuration is not stored: no bound token)
    ex = {"Authorization": f"Bearer {create_token(engine, 'console', 'admin')}"}
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://expertline.test") as c:
            yield Node(service, c, health, channel, clock, rc, ex)
    finally:
        await service.async_stop()


def _count(engine: Engine, query: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(query).scalar() or 0)


async def test_a_refused_request_fails_alone_and_the_rest_of_its_batch_commits(
    engine: Engine, node: Node
) -> None:
    service = node.service
    writer = service.writer
    assert isinstance(writer, ProcessWriter if engine.dialect.name == "sqlite" else ThreadWriter)
    refuse_rows(engine)
    await service.async_set_presence("carol", "available")
    metric = ("expertline_runtime_refused_changes_total", {"origin": "request"})
    before = REGISTRY.get_sample_value(*metric) or 0.0

    # One batch: every create reaches the writer's queue before it runs.
    requests = [
        TaskRequest(entry_point="+18005550100", caller=f"+1555000{i:04d}") for i in range(12)
    ]
    requests.insert(
        5,
        TaskRequest(entry_point="+18005550200", caller=POISON, callback_url="http://cc.test/h"),
    )
    outcomes = await asyncio.wait_for(
        asyncio.gather(*(service.async_create_task(r) for r in requests), return_exceptions=True),
        30,
    )
    refused = outcomes.pop(5)
    assert isinstance(refused, InvalidInput), refused
    assert str(refused).startswith("the database refused this change: ")
    assert refusal(engine) in str(refused)
    assert all(not isinstance(o, BaseException) for o in outcomes), outcomes
    assert service.replay.refused == 1
    assert service.replay.replayed == len(requests)  # they were held together, then replayed
    created = {o.id for o in outcomes}  # type: ignore[union-attr]
    with engine.connect() as conn:
        stored = {r.task_id for r in conn.execute(select(runtime_tasks.c.task_id))}
        created_events = conn.execute(
            select(func.count()).where(routing_feed.c.type == "task.created")
        ).scalar()
    assert stored == created  # durable, and nothing of the refused one
    assert created_events == len(created)
    assert _count(engine, select(func.count()).select_from(webhook_deliveries)) == 0
    assert service.open_offers("carol") == []
    assert not [c for c in node.channel.calls if c[0] == "offer"]  # its offer never left
    assert await node.ready()

    # The same over HTTP: 422 for the poisoned request, 201 for the others around it.
    bodies = [{"caller": f"+1555100{i:04d}", "entry_point": "+18005550100"} for i in range(6)]
    bodies.insert(3, {"caller": POISON, "external_id": "poison-1"})
    answers = await asyncio.gather(*(node.create(**b) for b in bodies))
    statuses = [a.status_code for a in answers]
    assert statuses == [201, 201, 201, 422, 201, 201, 201], [a.text for a in answers]
    problem = answers[3].json()["error"]
    assert problem["code"] == "invalid"
    assert problem["message"].startswith("the database refused this change: ")
    assert "INSERT" not in problem["message"] and POISON not in problem["message"]
    # the refused task left no trace: no row, and its external id is free again
    assert (
        _count(engine, select(func.count()).where(runtime_tasks.c.external_id == "poison-1")) == 0
    )
    again = await node.create(caller="+15559", external_id="poison-1", entry_point="+18005550100")
    assert again.status_code == 201, again.text

    assert await node.ready()
    await node.routes_end_to_end()
    assert REGISTRY.get_sample_value(*metric) == before + 2


async def test_a_refused_timer_ends_its_task_with_tcd_27_and_the_others_go_on(
    engine: Engine, node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    service = node.service
    refuse_rows(engine, status="rejected")  # its rejection is refused, its ending is not
    poisoned = await service.async_create_task(
        TaskRequest(entry_point="+18005550100", caller=POISON)
    )
    normal = await service.async_create_task(TaskRequest(entry_point="+18005550100", caller="+1"))
    caplog.set_level(logging.INFO, logger="expertline.runtime")
    node.clock.now += 301  # both reach max wait (300 s, reject) in the same batch
    service.poke_timers()

    async def ended() -> bool:
        views = [await service.async_task(t.id) for t in (poisoned, normal)]
        return [v.status if v else None for v in views] == ["failed", "rejected"]

    await async_eventually(ended, timeout=20)
    with engine.connect() as conn:
        records = dict(conn.execute(select(tcd.c.task_id, tcd.c.call_disposition)).all())
    assert records == {poisoned.id: 27, normal.id: 22}
    logged = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert any(
        "refused by the database" in r.getMessage()
        and poisoned.id in r.getMessage()
        and refusal(engine) in r.getMessage()
        for r in logged
    ), [r.getMessage() for r in logged]
    rewinds = service.replay.rewinds
    node.clock.now += 3600
    service.poke_timers()
    await asyncio.sleep(0.3)
    assert service.replay.rewinds == rewinds  # nothing loops
    assert await node.ready()
    await node.routes_end_to_end()


async def test_a_refused_timer_whose_task_cannot_end_is_dropped_without_a_loop(
    engine: Engine, node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    service = node.service
    refuse_rows(engine, unless="queued")  # created, and then nothing more of it
    poisoned = await service.async_create_task(
        TaskRequest(entry_point="+18005550100", caller=POISON)
    )
    caplog.set_level(logging.INFO, logger="expertline.runtime")
    node.clock.now += 301
    service.poke_timers()
    await node.routes_end_to_end()  # meanwhile
    key = TimerKey(TimerKind.MAX_WAIT, poisoned.id)
    await async_eventually(lambda: key in service.replay.dropped, timeout=20)
    rewinds, commits = service.replay.rewinds, service.commits
    for _ in range(5):
        node.clock.now += 60
        service.poke_timers()
        await asyncio.sleep(0.05)
    assert (service.replay.rewinds, service.commits) == (rewinds, commits)
    view = service.task(poisoned.id)
    assert view is not None and view.status == "queued"  # as committed: nothing was written
    # The rewinds left the runtime with one timer heap: a task routed now cancels its timers
    # in the heap that fires them (a rewind used to swap the heap under the batch's cancel).
    assert rewinds > 0
    task_id = await node.routes_end_to_end()
    assert [k for k in service.timers.live() if k.subject == task_id] == []
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(f"task={poisoned.id} could not be ended either" in m for m in messages), messages
    assert any(f"timer dropped key={key}" in m for m in messages), messages
    assert _count(engine, select(func.count()).where(tcd.c.task_id == poisoned.id)) == 0
    assert await node.ready()
    await node.routes_end_to_end()


async def test_values_a_database_refuses_are_refused_at_the_edge_with_422(node: Node) -> None:
    """NaN and Infinity, NUL and other control characters, text over its column's width: each
    a clear 422 naming the field, and the node keeps routing (before, PostgreSQL refused the
    batch and every later request waited behind it)."""
    cases: list[tuple[dict[str, Any], str]] = [
        ({"attributes": {"score": float("nan")}}, "attributes.score"),
        ({"attributes": {"score": float("inf")}}, "attributes.score"),
        ({"attributes": {"tags": ["ok", "a\x00b"]}}, "attributes.tags"),
        ({"callback_url": "http://cc.test/\x00"}, "callback_url"),
        ({"external_id": "ext\x00"}, "external_id"),
        ({"caller": "+1555\x00"}, "caller"),
        ({"caller": "9" * 300}, "caller"),
        ({"caller": "\x07"}, "caller"),
    ]
    for body, path in cases:
        r = await node.create(**body)
        assert r.status_code == 422, (body, r.text)
        if "score" not in path:  # the NaN token may be refused by the JSON parser already
            details = r.json()["error"]["details"]
            assert [d["path"] for d in details] == [path], details
    r = await node.create(**{"caller": "9" * 300, "external_id": "x\x00"})
    assert r.status_code == 422
    assert {d["path"] for d in r.json()["error"]["details"]} == {"caller", "external_id"}
    phone = {"phone": "sip:1\x00@pbx.test"}
    r = await node.request("POST", "/api/v1/offers/x.1/accept", json=phone, headers=node.ex)
    assert r.status_code == 422, r.text
    r = await node.request("GET", "/api/v1/tasks/abc%00def", headers=node.rc)
    assert r.status_code == 404, r.text
    assert await node.ready()
    await node.routes_end_to_end()
    assert node.service.replay.refused == 0  # all of it stopped at the edge


async def test_the_runtime_checks_requests_from_every_way_in(node: Node) -> None:
    """Not only the HTTP model: the SIP front and any caller of the runtime meet the same
    limits (``expertline.limits``), every problem listed by its field."""
    bad = TaskRequest(
        entry_point="+18005550100",
        caller="x" * 256,
        external_id="a\x00",
        callback_url="http://cc.test/\x01",
        attributes={"n": float("nan"), "m": float("-inf"), "ok": 1},
    )
    with pytest.raises(InvalidInput) as refused:
        await node.service.async_create_task(bad)
    paths = [p.path for p in refused.value.details]
    assert paths == ["caller", "external_id", "callback_url", "attributes.n", "attributes.m"]
    with pytest.raises(InvalidInput):
        await node.service.async_accept("x.1", "sip:\x00")
    assert PHONES  # the harness's experts are in place
    await node.routes_end_to_end()


def refuse_records(engine: Engine) -> None:
    """Make the database refuse TCD rows whose ANI is ``POISON`` (as it refuses the record of
    a caller wider than its column, stored before values were bounded at the edge)."""
    if engine.dialect.name == "sqlite":
        sql = (
            f"CREATE TRIGGER test_poison_tcd BEFORE INSERT ON tcd WHEN NEW.ani = '{POISON}' "
            f"BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END"
        )
    else:
        sql = f"ALTER TABLE tcd ADD CONSTRAINT test_poison CHECK (ani IS DISTINCT FROM '{POISON}')"
    with engine.begin() as conn:
        conn.execute(text(sql))


async def test_a_restart_whose_recovery_the_database_refuses_still_starts_and_routes(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """SIP tasks in flight end with TCD 27 at a restart; when one of those records is refused,
    the others still end, the node starts, and routing goes on."""
    first = make_service(engine, routing_config())
    await first.async_start()
    poisoned = await first.async_create_task(
        TaskRequest(entry_point="+18005550100", caller=POISON, origin="sip")
    )
    other = await first.async_create_task(
        TaskRequest(entry_point="+18005550100", caller="+15550002222", origin="sip")
    )
    await first.async_stop()
    refuse_records(engine)
    caplog.set_level(logging.INFO, logger="expertline.runtime")
    health = Health()
    second = make_service(engine, routing_config(), health=health)
    try:
        await asyncio.wait_for(second.async_start(), 20)
        await async_eventually(lambda: (second.task(other.id) or other).status == "failed")
        with engine.connect() as conn:
            records = dict(conn.execute(select(tcd.c.task_id, tcd.c.call_disposition)).all())
        assert records == {other.id: 27}
        messages = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert any(m.startswith("recovery batch refused by the database") for m in messages)
        await async_eventually(
            lambda: any(
                f"task={poisoned.id} could not be ended either" in m
                for m in (r.getMessage() for r in caplog.records)
            )
        )
        assert health.ready()
        await second.async_set_presence("carol", "available")
        task = await second.async_create_task(TaskRequest(entry_point="+18005550200"))
        (offer,) = second.open_offers("carol")
        assert (await second.async_accept(offer.id)).ok
        await second.async_task_event(task.id, "connected")
        assert (await second.async_task_event(task.id, "ended")).status == "completed"
    finally:
        await second.async_stop()


async def test_a_configuration_change_the_database_refuses_is_not_tried_again_and_again(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """Removing a queue rejects its waiting tasks; when one of those rejections is refused,
    the configuration version is not applied, said once, and routing goes on with the one in
    effect."""
    configs = {"current": routing_config(version=1)}
    service = polling_service(engine, configs)
    await service.async_start()
    try:
        refuse_rows(engine, status="rejected")
        waiting = await service.async_create_task(TaskRequest(queue="support", caller=POISON))
        caplog.set_level(logging.INFO, logger="expertline.runtime")
        configs["current"] = without_queue(configs["current"], "support", version=2)
        await async_eventually(lambda: service.replay.refused == 1)
        await asyncio.sleep(0.5)  # ten polls of the configuration
        assert service.replay.refused == 1
        assert service.config.version == 1
        assert (service.task(waiting.id) or waiting).status == "queued"
        messages = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert [m for m in messages if m.startswith("configuration version 2 not applied")]
        await service.async_set_presence("alice", "available")
        task = await service.async_create_task(TaskRequest(queue="billing"))
        (offer,) = service.open_offers("alice")
        assert offer.task_id == task.id and (await service.async_accept(offer.id)).ok
    finally:
        await service.async_stop()
