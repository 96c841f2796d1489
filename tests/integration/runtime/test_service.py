"""RuntimeService in-process: timers on a fake clock, expert channels, restarts, config changes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from rt_harness import (
    PHONES,
    FakeClock,
    make_service,
    polling_service,
    routing_config,
    without_queue,
)
from sqlalchemy import Engine, func, select

from expertline.db.tables import routing_feed, runtime_offers, runtime_outbox, tcd
from expertline.routing.model import ExpertSpec, RoutingConfig
from expertline.runtime.ports import OfferView, TaskRequest
from expertline.runtime.projection import task_json
from expertline.runtime.service import RuntimeService
from support.wait import async_eventually


class RecordingChannel:
    """An expert channel that records what it is asked to show, checking it was committed."""

    def __init__(self, engine: Engine, name: str = "im", block: bool = False) -> None:
        self.name = name
        self.engine = engine
        self.block = block
        self.calls: list[tuple[str, str, str]] = []  # (kind, expert, offer id)
        self.committed_before_effect: list[bool] = []

    def reaches(self, expert: ExpertSpec) -> bool:
        return expert.im is not None

    async def async_offer(self, offer: OfferView) -> None:
        if self.block:
            await asyncio.Event().wait()
        with self.engine.connect() as conn:
            row = conn.execute(
                select(runtime_offers.c.status).where(runtime_offers.c.offer_id == offer.id)
            ).first()
        self.committed_before_effect.append(row is not None and row.status == "open")
        self.calls.append(("offer", offer.expert_id, offer.id))

    async def async_withdrawn(self, offer: OfferView, reason: str) -> None:
        self.calls.append((f"withdrawn:{reason}", offer.expert_id, offer.id))

    async def async_accepted(self, offer: OfferView) -> None:
        self.calls.append(("accepted", offer.expert_id, offer.id))

    async def async_notice(self, expert: ExpertSpec, message: str, count: int = 0) -> None:
        self.calls.append((f"notice:{message}", expert.id, str(count) if count else ""))

    def resync_presence(self) -> None:
        return None


@pytest.fixture
async def started() -> AsyncIterator[Callable[..., Any]]:
    services: list[RuntimeService] = []

    async def start(engine: Engine, config: RoutingConfig | None = None, **kw: Any) -> Any:
        channels = kw.pop("channels", [])
        service = make_service(engine, config or routing_config(), **kw)
        for channel in channels:
            service.register_channel(channel)
        await service.async_start()
        services.append(service)
        return service

    yield start
    for service in services:
        await service.async_stop()


async def test_offer_timeout_fires_on_the_fake_clock(engine: Engine, started: Any) -> None:
    clock = FakeClock()
    service = await started(engine, clock=clock)
    await service.async_set_presence("carol", "available")
    view = await service.async_create_task(TaskRequest(queue="support"))
    first = service.open_offers("carol")[0]
    assert first.expires_at == pytest.approx(clock.now + 20.0)
    clock.now += 20.5
    service.poke_timers()
    await async_eventually(lambda: first.id not in {o.id for o in service.open_offers("carol")})
    with engine.connect() as conn:
        timeouts = conn.execute(
            select(func.count()).where(routing_feed.c.type == "offer.timeout")
        ).scalar()
    assert timeouts == 1
    assert service.task(view.id) is not None


async def test_channels_show_offers_after_commit_and_the_outcome(
    engine: Engine, started: Any
) -> None:
    channel = RecordingChannel(engine)
    service = await started(engine, channels=[channel])
    await service.async_set_presence("alice", "available")
    await service.async_set_presence("bob", "available")
    view = await service.async_create_task(TaskRequest(queue="billing", caller="+15550001"))
    await async_eventually(lambda: len(channel.calls) == 2)
    assert channel.committed_before_effect == [True, True]
    offers = {expert: oid for _, expert, oid in channel.calls}
    result = await service.async_accept(offers["bob"], phone="+15559999")
    assert result.ok
    await async_eventually(lambda: len(channel.calls) == 4)
    assert set(channel.calls[2:]) == {
        ("accepted", "bob", offers["bob"]),
        ("withdrawn:taken", "alice", offers["alice"]),
    }
    task = service.task(view.id)
    assert task is not None and (task.expert, task.label) == ("bob", "+15559999")
    await async_eventually(lambda: _outbox_rows(engine) == 0)


def _outbox_rows(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(runtime_outbox)).scalar() or 0)


async def test_effects_not_performed_before_a_stop_are_performed_after_restart(
    engine: Engine, started: Any
) -> None:
    stuck = RecordingChannel(engine, block=True)
    first = await started(engine, channels=[stuck])
    await first.async_set_presence("carol", "available")
    await first.async_create_task(TaskRequest(queue="support"))
    assert _outbox_rows(engine) == 1
    await first.async_stop()

    again = RecordingChannel(engine)
    second = await started(engine, channels=[again])
    await async_eventually(lambda: [c[0] for c in again.calls] == ["offer"])
    assert again.calls[0][2] == second.open_offers("carol")[0].id
    await async_eventually(lambda: _outbox_rows(engine) == 0)


async def test_sip_tasks_in_flight_end_with_tcd_27_after_a_restart(
    engine: Engine, started: Any
) -> None:
    first = await started(engine)
    sip = await first.async_create_task(TaskRequest(queue="billing", origin="sip"))
    http = await first.async_create_task(TaskRequest(queue="billing"))
    await first.async_stop()

    second = await started(engine)
    lost = await second.async_task(sip.id)
    kept = await second.async_task(http.id)
    assert lost is not None and lost.status == "failed"
    assert lost.extra["call_disposition"] == 27
    assert kept is not None and kept.status == "queued"
    with engine.connect() as conn:
        rows = conn.execute(select(tcd.c.task_id, tcd.c.call_disposition)).all()
    assert [tuple(r) for r in rows] == [(sip.id, 27)]
    await second.async_stop()
    third = await started(engine)  # a second restart ends nothing twice
    assert (await third.async_task(sip.id)).status == "failed"  # type: ignore[union-attr]
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(tcd)).scalar() == 1


async def test_an_ended_task_has_the_same_shape_after_a_restart(
    engine: Engine, started: Any
) -> None:
    """Issue 13.3: read on another node (or after a restart) an ended task lacked ``offers``
    (present as ``[]`` on the node that ran it)."""
    first = await started(engine)
    task = await first.async_create_task(TaskRequest(queue="billing"))
    ended = await first.async_task_event(task.id, "abandoned")
    here = task_json(ended)
    await first.async_stop()

    second = await started(engine)
    read_back = await second.async_task(task.id)
    assert read_back is not None and second.task(task.id) is None  # read from the database
    assert task_json(read_back) == here
    assert here["offers"] == [] and here["status"] == "abandoned"


async def test_a_new_configuration_version_is_picked_up_by_the_poller(
    engine: Engine, started: Any
) -> None:
    configs = {"current": routing_config(version=1)}
    service = polling_service(engine, configs)
    await service.async_start()
    try:
        waiting = await service.async_create_task(TaskRequest(queue="support"))
        configs["current"] = without_queue(configs["current"], "support", version=2)
        await async_eventually(lambda: service.config.version == 2)
        await async_eventually(
            lambda: (service.task(waiting.id) or waiting).status == "rejected", timeout=5
        )
        with engine.connect() as conn:
            assert conn.execute(select(tcd.c.call_disposition)).scalars().all() == [22]
    finally:
        await service.async_stop()


async def test_expert_lookup_by_im_address(engine: Engine, started: Any) -> None:
    service = await started(engine)
    spec = service.expert_by_im("Alice@Example.test/desk")
    assert spec is not None and spec.phone == PHONES["alice"]
    assert service.expert_by_im("mallory@example.test") is None


async def test_a_runtime_restarted_after_another_node_tells_the_experts_with_work(
    engine: Engine, started: Any
) -> None:
    """The same service object starts again (a standby that gains the HA lease back) and
    begins from the database; after another node routed, experts with offers are told."""
    first = await started(engine)
    for expert in ("alice", "bob", "carol"):
        await first.async_set_presence(expert, "available")
    view = await first.async_create_task(TaskRequest(queue="billing"))  # offered to alice, bob
    await first.async_stop()

    channel = RecordingChannel(engine)
    first.register_channel(channel)
    first.failover_from = "rt-b"
    await first.async_start()
    await async_eventually(lambda: len(channel.calls) == 2)
    assert sorted(channel.calls) == [
        ("notice:failover", "alice", ""),
        ("notice:failover", "bob", ""),
    ]  # carol has nothing in flight
    again = await first.async_task(view.id)
    assert again is not None and again.status == "offered"
    assert {o.expert_id for o in first.open_offers("alice") + first.open_offers("bob")} == {
        "alice",
        "bob",
    }


async def test_a_phone_that_keeps_failing_is_called_once_per_cooldown_then_taken_out(
    engine: Engine, started: Any
) -> None:
    """SIP proxy reports a failed delivery at once (a phone answering 404): the expert gets
    the task again only after ``delivery_cooldown`` and is set away after
    ``max_delivery_failures`` failures, with the ``phone_failed`` notice saying how many."""
    clock = FakeClock()
    channel = RecordingChannel(engine)
    service = await started(engine, clock=clock, channels=[channel])
    await service.async_set_presence("carol", "available")
    view = await service.async_create_task(TaskRequest(queue="support"))
    for failure in (1, 2, 3):
        offers = service.open_offers("carol")
        assert len(offers) == 1, failure
        await service.async_accept(offers[0].id)
        await service.async_delivery_failed(view.id, 19)
        assert service.open_offers("carol") == []  # not again at once
        clock.now += 5.1  # the cooldown's end (the core's unit tests pin the instant)
        service.poke_timers()
        if failure < 3:
            await async_eventually(lambda: len(service.open_offers("carol")) == 1)
    await async_eventually(lambda: ("notice:phone_failed", "carol", "3") in channel.calls)
    state = service.expert_state("carol")
    assert state is not None and state["presence"] == "away"
    assert service.open_offers("carol") == []
    task = service.task(view.id)
    assert task is not None and task.status == "queued"
    assert [c[0] for c in channel.calls].count("offer") == 3
