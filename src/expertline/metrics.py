"""The node's metrics for ``GET /metrics``, read from its parts when Prometheus scrapes.

Counting on the routing path would cost every task, so almost nothing is counted there: the
runtime hands each committed batch to ``RuntimeMetrics.committed`` (a C-level count of its
feed rows by type and one increment per ended task, after the commit) and observes two timings
per batch (the core's decisions, the commit) into plain buckets, which need no lock on the one
event loop that writes them. Everything else is read at scrape time by ``NodeCollector``: tasks in
flight, queue depth and oldest wait, expert states (one pass over the core), presence links,
SIP responses (the transaction layer's counts), and webhook backlogs (one bounded query,
made off the event loop before the scrape).

Counters count since the process started, as Prometheus expects (it handles the reset at a
restart); on an HA pair each node counts what it routed while active.
"""

from __future__ import annotations

import asyncio
import logging
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterator
from operator import itemgetter
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from sqlalchemy import Engine, func, select

from expertline.db.tables import webhook_deliveries
from expertline.presence.link import LinkState
from expertline.routing.states import FINAL_TASK, TaskStatus

log = logging.getLogger("expertline.metrics")

PREFIX = "expertline"
_TYPE = itemgetter("type")
# Feed types of an offer's outcome, and the label each is counted under.
OFFER_OUTCOMES: dict[str, str] = {
    "offer.accepted": "accepted",
    "offer.declined": "declined",
    "offer.timeout": "timeout",
    "offer.withdrawn": "withdrawn",
}
LIVE_TASK_STATUSES = tuple(s.value for s in TaskStatus if s not in FINAL_TASK)
EXPERT_STATES = ("offline", "away", "dnd", "available", "reserved", "busy", "wrap_up")
LINK_STATES = tuple(LinkState)
DECISION_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)
COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BACKLOG_TIMEOUT = 2.0  # seconds a scrape waits for the backlog query before leaving it out


class Timings:
    """Durations counted into fixed buckets by the one event loop that observes them (no lock,
    two list operations an observation), exported as a Prometheus histogram at scrape time."""

    __slots__ = ("bounds", "counts", "doc", "name", "total")

    def __init__(self, name: str, doc: str, bounds: tuple[float, ...]) -> None:
        self.name = name
        self.doc = doc
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last: above every bound
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    def family(self) -> HistogramMetricFamily:
        """The histogram as Prometheus reads it: cumulative buckets, ``+Inf`` last."""
        buckets: list[tuple[str, float]] = []
        seen = 0
        for bound, count in zip(
            (*map(floatToGoString, self.bounds), "+Inf"), self.counts, strict=True
        ):
            seen += count
            buckets.append((bound, seen))
        return HistogramMetricFamily(self.name, self.doc, buckets=buckets, sum_value=self.total)


class RuntimeMetrics:
    """What the runtime counts as it commits (plain numbers; exported by ``NodeCollector``)."""

    def __init__(self) -> None:
        self.events: Counter[str] = Counter()  # feed rows committed, by type
        self.ended: dict[tuple[str, int], int] = {}  # tasks ended, by (status, disposition)
        self.decision = Timings(
            f"{PREFIX}_runtime_decision_seconds",
            "Time the routing core took to handle one batch of operations (before its commit)",
            DECISION_BUCKETS,
        )
        self.commit = Timings(
            f"{PREFIX}_runtime_commit_seconds",
            "Time one batch took to commit (the durable write every answer waits for)",
            COMMIT_BUCKETS,
        )

    def decided(self, seconds: float) -> None:
        """The core handled one batch of operations in ``seconds``."""
        self.decision.observe(seconds)

    def committed(self, batch: Any) -> None:
        """Count a committed batch (``store.Batch``) once it is durable: its feed rows by type
        (a C-level count), and its TCD rows, one per ended task, by status and disposition."""
        self.events.update(map(_TYPE, batch.feed))
        for row in batch.tcd:
            key = (str(row["data"].get("status")), int(row["call_disposition"]))
            self.ended[key] = self.ended.get(key, 0) + 1


def _counter(name: str, doc: str, labels: list[str]) -> CounterMetricFamily:
    return CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=labels)


def _gauge(name: str, doc: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=labels or [])


class NodeCollector(Collector):
    """Reads the node's parts (``ctx.services``) at scrape time; runs on the event loop."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.backlog: dict[str, int] | None = None  # set by ``async_refresh`` before a scrape

    async def async_refresh(self) -> None:
        """Read the webhook backlogs off the loop, bounded (a slow database leaves them out)."""
        self.backlog = None
        if self.ctx.services.runtime is None:
            return
        try:
            self.backlog = await asyncio.wait_for(
                asyncio.to_thread(webhook_backlog, self.ctx.engine), BACKLOG_TIMEOUT
            )
        except Exception as exc:  # the scrape goes on without it
            log.info("webhook backlog not read error=%r", exc)
        feeds = self.ctx.services.record_feeds
        if feeds is not None and self.backlog is not None:
            self.backlog.update(feeds.backlog())

    def collect(self) -> Iterator[Metric]:
        runtime = self.ctx.services.runtime
        if runtime is not None:
            yield from _runtime_metrics(runtime)
        yield from _presence_metrics(self.ctx.services.presence_sources)
        front = self.ctx.services.sip
        if front is not None:
            yield from _sip_metrics(front)
        if self.backlog is not None:
            backlog = _gauge(
                "webhook_backlog",
                "Deliveries waiting to be made: task webhooks and each record feed target",
                ["target"],
            )
            for target, count in sorted(self.backlog.items()):
                backlog.add_metric([target], count)
            yield backlog


def _runtime_metrics(runtime: Any) -> Iterator[Metric]:
    m: RuntimeMetrics = runtime.metrics
    ended = _counter(
        "tasks_ended", "Tasks ended, by status and TCD disposition", ["status", "disposition"]
    )
    for (status, disposition), count in sorted(m.ended.items()):
        ended.add_metric([status, str(disposition)], count)
    yield ended
    created = _counter("tasks_created", "Tasks created (HTTP and SIP)", [])
    created.add_metric([], m.events.get("task.created", 0))
    yield created
    offers = _counter("offers", "Offers closed, by outcome", ["outcome"])
    for kind, outcome in OFFER_OUTCOMES.items():
        offers.add_metric([outcome], m.events.get(kind, 0))
    yield offers
    offered = _counter("offers_created", "Offers made to experts", [])
    offered.add_metric([], m.events.get("offer.created", 0))
    yield offered
    events = _counter("events", "Feed events committed, by type", ["type"])
    for kind, count in sorted(m.events.items()):
        events.add_metric([kind], count)
    yield events
    yield m.decision.family()
    yield m.commit.family()
    census = runtime.census() if runtime.running else None
    if census is None:
        return
    tasks = _gauge("tasks", "Tasks in flight, by status", ["status"])
    for status in LIVE_TASK_STATUSES:
        tasks.add_metric([status], census.tasks.get(status, 0))
    yield tasks
    open_offers = _gauge("offers_open", "Offers waiting for an answer")
    open_offers.add_metric([], census.open_offers)
    yield open_offers
    now = runtime.clock()
    depth = _gauge("queue_waiting", "Tasks waiting in a queue (queued or offered)", ["queue"])
    oldest = _gauge(
        "queue_oldest_wait_seconds", "How long the oldest waiting task has waited", ["queue"]
    )
    for queue in sorted(runtime.config.queues):
        count, created = census.waiting.get(queue, (0, now))
        depth.add_metric([queue], count)
        oldest.add_metric([queue], max(0.0, now - created))
    yield depth
    yield oldest
    experts = _gauge("experts", "Configured experts, by routing state", ["state"])
    for state in EXPERT_STATES:
        experts.add_metric([state], census.experts.get(state, 0))
    yield experts


def _presence_metrics(sources: Any) -> Iterator[Metric]:
    link = _gauge(
        "presence_link_state",
        "1 for the state each presence source's server link is in",
        ["source", "state"],
    )
    up = _gauge("presence_link_up", "1 when a presence source's link is online", ["source"])
    for source in sources:
        current = source.link_state
        for state in LINK_STATES:
            link.add_metric([source.id, state], 1 if state == current else 0)
        up.add_metric([source.id], 1 if current == "online" else 0)
    yield link
    yield up


def _sip_metrics(front: Any) -> Iterator[Metric]:
    responses = _counter(
        "sip_responses", "SIP responses sent and received, by status", ["direction", "code"]
    )
    for (direction, status), count in sorted(front.layer.responses.items()):
        responses.add_metric([direction, str(status)], count)
    yield responses


def webhook_backlog(engine: Engine) -> dict[str, int]:
    """Task webhook deliveries neither delivered nor given up (the pending index serves it)."""
    query = (
        select(func.count())
        .select_from(webhook_deliveries)
        .where(
            webhook_deliveries.c.delivered_at.is_(None), webhook_deliveries.c.failed_at.is_(None)
        )
    )
    with engine.connect() as conn:
        return {"task-webhooks": int(conn.execute(query).scalar() or 0)}


class NodeMetrics:
    """``/metrics`` of one node: the process-wide registry and this node's own collector."""

    def __init__(self, ctx: Any) -> None:
        self.collector = NodeCollector(ctx)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)

    async def async_exposition(self) -> bytes:
        await self.collector.async_refresh()
        started = time.perf_counter()
        text = generate_latest(REGISTRY) + generate_latest(self.registry)
        elapsed = time.perf_counter() - started
        if elapsed > 0.05:
            log.info("slow metrics scrape seconds=%.3f", elapsed)
        return text


__all__ = ["NodeMetrics", "RuntimeMetrics"]
