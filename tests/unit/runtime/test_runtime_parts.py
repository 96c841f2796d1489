"""The runtime's parts, each alone: the projection (pure), the pipeline over a fake store,
the effects delivery with a failing channel. No database, no network."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from expertline.errors import InvalidInput, NotFound, Unavailable
from expertline.routing import events as ev
from expertline.routing.model import ExpertSpec, Presence, QueueSpec, RoutingConfig
from expertline.runtime import store
from expertline.runtime.core_adapter import CoreAdapter
from expertline.runtime.effects import Effect, EffectDelivery
from expertline.runtime.operations import Operations
from expertline.runtime.pipeline import Operation, Pending, Pipeline
from expertline.runtime.ports import OfferView, TaskView
from expertline.runtime.projection import Closed, Projector, task_json, task_view_from_row
from expertline.runtime.replay import Host, Replayer
from expertline.runtime.views import CommittedViews, FeedCursor

NOW = 1_800_000_000.0


def config() -> RoutingConfig:
    experts = {e: ExpertSpec(id=e, name=e.title(), phone=f"sip:{e}@pbx") for e in ("ann", "bo")}
    queue = QueueSpec(id="help", name="Help", offer_to=2, offer_timeout=20.0)
    return RoutingConfig(
        version=1,
        experts=experts,
        queues={"help": queue},
        matches={"help": (frozenset(experts),)},
        entry_points={},
    )


def core_with_a_task(*events: ev.Event) -> CoreAdapter:
    core = CoreAdapter.restore(config(), store.StoredState([], [], [], {}, []), NOW)
    for expert in ("ann", "bo"):
        core.handle(ev.PresenceChanged(expert, "available"), NOW)
    core.handle(ev.TaskCreated(task_id="t1", queue_id="help", caller="+15550100"), NOW)
    for event in events:
        core.handle(event, NOW + 1)
    return core


def project(core: CoreAdapter, meta: dict[str, dict[str, Any]]) -> tuple[store.Batch, Closed]:
    projector = Projector(
        meta=meta,
        committed=lambda _tid: None,
        take=lambda _name: 1,
        config=config,
        show_rules=lambda _queue: {},
    )
    batch, closed = store.Batch(), Closed()
    projector.close(core, core.drain_dirty(), batch, closed, NOW + 2)
    return batch, closed


def stored(batch: store.Batch, task_id: str) -> dict[str, Any]:
    """The task's row as the database gives it back (times as datetimes)."""
    row = dict(batch.tasks[task_id])
    row["created_at"] = datetime.fromtimestamp(row["created_at"], UTC)
    return row


# --- projection --------------------------------------------------------------------------------


@pytest.mark.parametrize("ended", [False, True])
def test_a_task_has_one_shape_in_memory_and_read_back_from_its_row(ended: bool) -> None:
    """Issue 13.3: an ended task read on another node (from its row) lacked ``offers``."""
    events = (ev.TaskAbandoned("t1"),) if ended else ()
    core = core_with_a_task(*events)
    meta = {"t1": {"origin": "http", "callback_url": None, "external_id": None}}
    batch, closed = project(core, meta)
    live = task_json(closed.tasks["t1"])
    read_back = task_json(task_view_from_row(stored(batch, "t1")))
    assert read_back == live
    assert ("offers" in read_back) and (read_back["offers"] == [] if ended else True)
    assert read_back["status"] == ("abandoned" if ended else "offered")


def test_the_projection_writes_a_row_per_dirty_object_and_views_of_offers() -> None:
    core = core_with_a_task()
    batch, closed = project(core, {})
    assert set(batch.tasks) == {"t1"} and set(batch.experts) == {"ann", "bo"}
    assert len(batch.offers) == 2 == len(closed.offers)
    view = next(iter(closed.offers.values()))
    assert isinstance(view, OfferView)
    assert (view.task_id, view.queue_name, view.caller) == ("t1", "Help", "+15550100")
    assert {o["expert"] for o in task_json(closed.tasks["t1"])["offers"]} == {"ann", "bo"}
    # nothing is dirty twice
    again, _ = project(core, {})
    assert again.empty()


# --- pipeline over a fake store ----------------------------------------------------------------


class FakeWriter:
    """A ``BatchWriter`` that keeps batches in a list, or fails while ``down``."""

    name = "fake"
    batch_ops = 100

    def __init__(self) -> None:
        self.committed: list[store.Batch] = []
        self.down = False

    async def async_start(self) -> None:
        return None

    async def async_write(self, batch: store.Batch) -> bool:
        await asyncio.sleep(0)
        if self.down:
            raise ConnectionError("database away")
        self.committed.append(batch)
        return True

    async def async_stop(self) -> None:
        return None


class Stages:
    def __init__(self) -> None:
        self.rows = 0
        self.published: list[int] = []
        self.health: list[tuple[bool, str]] = []
        self.closed = 0

    def close(self) -> Pending:
        pending = Pending()
        if self.rows:
            pending.batch.feed.append({"id": self.rows})
            self.rows = 0
        self.closed += 1
        pending.order = self.closed
        return pending

    def publish(self, pending: Pending) -> None:
        self.published.append(pending.order)

    def report(self, up: bool, detail: str) -> None:
        self.health.append((up, detail))

    def fenced(self) -> None:
        raise AssertionError("not fenced in these tests")


def pipeline_of(writer: FakeWriter, stages: Stages) -> Pipeline:
    pipeline = Pipeline(writer, stages, "n1")
    pipeline.replay = Replayer(
        Host(
            apply=pipeline.apply,
            close=stages.close,
            commit=pipeline.async_commit,
            publish=stages.publish,
            rewind=lambda: asyncio.sleep(0),
            ending=lambda _tid: Operation(lambda: None, None),
            drop_timer=lambda _key: None,
            wake=pipeline.wake,
            give_back=lambda _done: None,
            stopped=lambda: Unavailable("stopped"),
        )
    )
    pipeline.accepting = True
    return pipeline


async def test_operations_share_commits_and_are_answered_after_them() -> None:
    writer, stages = FakeWriter(), Stages()
    pipeline = pipeline_of(writer, stages)
    runner = asyncio.create_task(pipeline.async_run())

    def change(n: int) -> int:
        stages.rows += 1
        return n

    answers = await asyncio.gather(
        *(pipeline.async_submit(lambda n=n: change(n)) for n in range(50))
    )
    assert answers == list(range(50))
    assert 1 <= len(writer.committed) < 50  # grouped
    assert stages.published == sorted(stages.published)
    runner.cancel()


async def test_callers_hear_503_promptly_while_the_database_is_away_and_it_commits_later() -> None:
    writer, stages = FakeWriter(), Stages()
    pipeline = pipeline_of(writer, stages)
    runner = asyncio.create_task(pipeline.async_run())
    writer.down = True

    def change() -> str:
        stages.rows += 1
        return "done"

    with pytest.raises(Unavailable) as first:
        await asyncio.wait_for(pipeline.async_submit(change), timeout=1.0)
    assert first.value.retry_after is not None
    with pytest.raises(Unavailable):  # refused at once while commits fail
        await asyncio.wait_for(pipeline.async_submit(change), timeout=0.1)
    assert stages.health[-1][0] is False and writer.committed == []
    writer.down = False
    for _ in range(200):  # the batch of the first call lands once the database is back
        if writer.committed:
            break
        await asyncio.sleep(0.01)
    assert len(writer.committed) == 1 and stages.health[-1] == (True, "database writable again")
    assert await pipeline.async_submit(change) == "done"
    runner.cancel()


async def test_a_stopping_pipeline_answers_everything_it_holds() -> None:
    writer, stages = FakeWriter(), Stages()
    pipeline = pipeline_of(writer, stages)
    queued = asyncio.create_task(pipeline.async_submit(lambda: None))  # no writer runs
    await asyncio.sleep(0)
    pipeline.accepting = False
    pipeline.answer_the_rest()
    with pytest.raises(Unavailable):
        await asyncio.wait_for(queued, timeout=0.5)
    with pytest.raises(Unavailable):
        await pipeline.async_submit(lambda: None)


# --- effects -----------------------------------------------------------------------------------


class FlakyChannel:
    name = "im"

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.offers: list[str] = []

    def reaches(self, expert: ExpertSpec) -> bool:
        return True

    async def async_offer(self, offer: OfferView) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("link down")
        self.offers.append(offer.id)

    async def async_withdrawn(self, offer: OfferView, reason: str) -> None:
        return None

    async def async_accepted(self, offer: OfferView) -> None:
        return None

    async def async_notice(self, expert: ExpertSpec, message: str) -> None:
        return None

    def resync_presence(self) -> None:
        return None


PAYLOAD = {"offer_id": "o1", "task_id": "t1", "expert_id": "ann", "code": "1234"}


@pytest.mark.parametrize(("failures", "delivered"), [(0, ["o1"]), (2, ["o1"]), (3, [])])
async def test_effects_are_retried_then_given_up_and_their_outbox_rows_handed_back(
    failures: int, delivered: list[str]
) -> None:
    channel = FlakyChannel(failures)
    woken: list[bool] = []
    delivery = EffectDelivery(lambda _o: None, lambda _e: None, lambda: woken.append(True), pause=0)
    await delivery.async_perform(Effect(channel, "offer", dict(PAYLOAD), 7))
    assert channel.offers == delivered
    assert delivery.take_done() == [7] and woken == [True]
    assert delivery.dropped == (1 if not delivered else 0)


def test_task_views_are_plain_values() -> None:
    view = TaskView("t", "1", "queued", "help", None, None, "2027-01-15T08:00:00.000Z")
    assert task_json(view)["created_at"] == "2027-01-15T08:00:00.000Z"


# --- reads on the request path -----------------------------------------------------------------


async def test_a_read_the_database_cannot_answer_is_a_prompt_503(tmp_path: Any) -> None:
    """Issue 17: a task read from the database while it is away raised the driver's error
    (a 500) or waited on it; now Unavailable, at once or within the bound."""
    import time

    from sqlalchemy.exc import OperationalError

    def away() -> None:
        raise OperationalError("select", {}, ConnectionError("server closed the connection"))

    with pytest.raises(Unavailable) as refused:
        await store.async_read(away)
    assert refused.value.retry_after
    started = time.monotonic()
    with pytest.raises(Unavailable):
        await store.async_read(time.sleep, 2.0, within=0.1)
    assert time.monotonic() - started < 1.0
    assert await store.async_read(lambda x: x + 1, 1) == 2


class OperationsHost:
    """The runtime as the operations see it: committed views, a pipeline, the core's events."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.engine: Any = None  # no database: every case here is decided in memory
        self.views = CommittedViews()
        self.pipeline = pipeline
        self.handled: list[ev.Event] = []

    @property
    def config(self) -> RoutingConfig:
        return config()

    def handle(self, event: ev.Event) -> list[Any]:
        self.handled.append(event)
        return [event]  # the core did something

    def offer(self, offer_id: str) -> OfferView | None:
        return None


async def test_operations_refuse_bad_input_before_anything_reaches_the_core() -> None:
    writer, stages = FakeWriter(), Stages()
    host = OperationsHost(pipeline_of(writer, stages))
    ops = Operations(host)
    with pytest.raises(InvalidInput, match="unknown event type"):
        await ops.async_task_event("t1", "rang", None, False)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="disposition must be"):
        await ops.async_delivery_failed("t1", 5)
    with pytest.raises(InvalidInput, match="unknown presence"):
        await ops.async_set_presence("ann", "busy", "rest")  # type: ignore[arg-type]
    with pytest.raises(NotFound, match="unknown expert"):
        await ops.async_set_presence("cy", Presence.AVAILABLE, "rest")
    with pytest.raises(InvalidInput, match="invalid phone"):
        await ops.async_accept("o1", "x" * 10_000)
    assert host.handled == [] and writer.committed == [] and host.views.meta == {}


async def test_an_operation_is_answered_after_the_commit_holding_its_event() -> None:
    writer, stages = FakeWriter(), Stages()
    host = OperationsHost(pipeline_of(writer, stages))
    runner = asyncio.create_task(host.pipeline.async_run())
    try:
        await Operations(host).async_set_presence("ann", Presence.AWAY, "console")
        assert host.handled == [ev.PresenceChanged("ann", Presence.AWAY, "console")]
        assert stages.published  # answered once a batch was published
    finally:
        runner.cancel()


async def test_the_feed_cursor_wakes_waiters_for_newer_rows_only() -> None:
    feed = FeedCursor()
    feed.last = 7
    assert await feed.async_wait(6, 5.0) == 7  # already newer: at once
    assert await feed.async_wait(7, 0.05) == 7  # nothing newer: at the timeout
    waiting = asyncio.create_task(feed.async_wait(7, 5.0))
    await asyncio.sleep(0)
    feed.advance(9)
    assert await asyncio.wait_for(waiting, 2.0) == 9
