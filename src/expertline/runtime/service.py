"""The durable runtime around the routing core: a façade over parts with one job each.

Everything that can change routing state (HTTP calls, IM answers, SIP, timers, configuration
changes) becomes an operation of the group-commit ``pipeline``: one writer task owns the
routing core (no locks on core state), runs the waiting operations on it and commits what they
changed in ONE transaction. The ``projection`` turns what the core marked dirty into rows and
views (one builder of a task's view); the committed ``views`` are what callers read (never a
state that a crash could take back); ``effects`` performs the IM texts of a committed batch
with retry; the configuration comes from the node's ``ConfigSource``; ``recovery`` rebuilds
the core from the database at a start and after a refused batch. What each task, answer and
presence operation checks and submits is in ``operations``. This module wires the parts and
implements the ports (``runtime/ports.py``) that adapters use, mostly by delegation.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine

from expertline.config.snapshot import ConfigPort
from expertline.config.source import ConfigSource
from expertline.errors import Unavailable
from expertline.metrics import RuntimeMetrics
from expertline.routing import commands as cmd
from expertline.routing import events as ev
from expertline.routing.model import ExpertSpec, Presence, QueueSpec, RoutingConfig
from expertline.routing.timers import TimerKey
from expertline.runtime import live, projection, recovery, store, timers
from expertline.runtime.batch import OpenBatch
from expertline.runtime.core_adapter import Census, CoreAdapter
from expertline.runtime.effects import EffectDelivery
from expertline.runtime.follow import async_follow, own_source
from expertline.runtime.heap import freeze_heap
from expertline.runtime.operations import Operations
from expertline.runtime.pipeline import NOT_ACTIVE, Operation, Pending, Pipeline
from expertline.runtime.ports import (
    AnswerResult,
    ExpertChannel,
    OfferView,
    TaskEventType,
    TaskRequest,
    TaskView,
)
from expertline.runtime.projection import WAITING_STATUSES, Projector, task_json
from expertline.runtime.replay import Host, Replayer
from expertline.runtime.timers import TimerHeap
from expertline.runtime.views import CommittedViews, FeedCursor
from expertline.runtime.webhooks import WebhookSender
from expertline.runtime.writer import BatchWriter, writer_for

__all__ = ["WAITING_STATUSES", "RuntimeService", "create_runtime", "task_json"]

log = logging.getLogger("expertline.runtime")

Clock = Callable[[], float]


class RuntimeService:
    """Implements ``TaskPort`` and ``RoutingPort`` over the routing core with durable state."""

    def __init__(
        self,
        engine: Engine,
        *,
        node: str = "local",
        clock: Clock = time.time,
        config: ConfigPort | None = None,
        config_loader: Callable[[Engine], tuple[RoutingConfig, Any]] | None = None,
        version_probe: Callable[[Engine], int] | None = None,
        config_poll: float = 1.0,
        webhook_options: dict[str, Any] | None = None,
        lost_on_recovery: Callable[[dict[str, Any]], bool] | None = None,
        health: Any = None,
        writer: BatchWriter | None = None,
    ) -> None:
        self.engine = engine
        self.writer = writer or writer_for(engine)
        self.node = node
        self.clock = clock
        # The configuration: the node's source, or one of the runtime's own (started and
        # stopped with it).
        self._own_source: ConfigSource | None = None
        if config is None:
            config = self._own_source = own_source(
                engine, config_loader, version_probe, config_poll
            )
        self._source: ConfigPort = config
        self.lost_on_recovery = lost_on_recovery or recovery.lost_after_restart
        self._doc: Any = None
        self._config: RoutingConfig = projection.empty_config()
        self._tasks: list[asyncio.Task[None]] = []
        self._running = False
        self.channels: list[ExpertChannel] = []
        self.feed = FeedCursor()
        self.webhooks = WebhookSender(engine, **(webhook_options or {}))
        self.metrics = RuntimeMetrics()  # read at scrape time (``expertline.metrics``)
        self._health = health
        # High availability (``expertline.ha.lease``): the lease token every commit must
        # still hold, and who to tell when a commit finds it stale.
        self.fence: int | None = None
        self.on_fenced: Callable[[], None] | None = None
        self.failover_from: str | None = None  # the other node that routed before this start
        self.ops = Operations(self)
        self._reset()

    def _reset(self) -> None:
        """The state of one run; ``async_start`` begins from the database with a new one
        (a standby node starts, stops and starts its runtime as it gains and loses the lease)."""
        self.core: CoreAdapter | None = None
        self.timers = TimerHeap()
        self._timer_wake = asyncio.Event()
        self.views = CommittedViews()
        self.pipeline = Pipeline(self.writer, self, self.node, self.metrics)
        self.effects = EffectDelivery(self.offer, self.expert, self._wake_if_running)
        self.committed_config: tuple[RoutingConfig, Any] = (self._config, self._doc)
        self.projector = Projector(
            meta=self.views.meta,
            committed=self.views.task,
            take=lambda name: self.batch.seq.take(name),
            config=lambda: self._config,
            show_rules=self.show_rules,
        )
        self._replay = Replayer(
            Host(
                apply=self.pipeline.apply,
                close=self.close,
                commit=self.pipeline.async_commit,
                publish=self.publish,
                rewind=functools.partial(recovery.async_rewind, self),
                ending=self.ending,
                drop_timer=self.timers.cancel,
                wake=self.pipeline.wake,
                give_back=lambda done: self.effects.done.extend(done),
                stopped=lambda: Unavailable(NOT_ACTIVE),
            )
        )
        self.pipeline.replay = self._replay
        self.batch = OpenBatch(
            node=self.node,
            config=lambda: self._config,
            channels=self.channels,
            meta=self.views.meta,
            effects=self.effects,
            projector=self.projector,
            set_timer=self._set_timer,
            cancel_timer=self.timers.cancel,
            fence=lambda: self.fence,
        )

    def _set_timer(self, key: TimerKey, at: float) -> None:
        self.timers.set(key, at)
        self._timer_wake.set()

    # --- the pipeline's stages -------------------------------------------------------------

    def report(self, up: bool, detail: str) -> None:
        """Readiness of the runtime component (``/readyz``): down while commits fail."""
        if self._health is not None:
            self._health.report("runtime", up, detail)

    def fenced(self) -> None:
        if self.on_fenced is not None:
            self.on_fenced()

    def _wake_if_running(self) -> None:
        if self._running:  # the deletion of done outbox rows rides the next batch
            self.pipeline.wake()

    # --- lifecycle -------------------------------------------------------------------------

    @property
    def config(self) -> RoutingConfig:
        return self._config

    @property
    def document(self) -> Any:
        """The configuration document in effect (texts, ``show`` rules, presence sources)."""
        return self._doc

    @property
    def running(self) -> bool:
        return self._running

    @property
    def commits(self) -> int:
        return self.pipeline.commits

    @property
    def replay(self) -> Replayer:
        """What the runtime did about batches the database refused (counts, dropped timers)."""
        return self._replay

    def register_channel(self, channel: ExpertChannel) -> None:
        """Add an expert channel (XMPP, ...). Offers to experts it reaches go through it too."""
        if channel not in self.channels:
            self.channels.append(channel)
            log.info("expert channel registered name=%s", channel.name)

    def unregister_channel(self, channel: ExpertChannel) -> None:
        if channel in self.channels:
            self.channels.remove(channel)
            log.info("expert channel unregistered name=%s", channel.name)

    async def async_start(self) -> None:
        """Load configuration and every task in flight, then start taking operations."""
        if self._running:
            return
        self._reset()
        starting = asyncio.create_task(self.writer.async_start())  # meanwhile, read
        try:
            if self._own_source is not None:
                await self._own_source.async_start()
            snapshot = self._source.current()
            self._config, self._doc = snapshot.routing, snapshot.document
            self.committed_config = (self._config, self._doc)
            self.batch.seq = await asyncio.to_thread(store.load_sequences, self.engine)
            self.feed.last = self.batch.seq.feed  # a stream resumes from what is stored
            state = await asyncio.to_thread(store.load_state, self.engine)
            await starting  # a writer that cannot start fails the start
            await recovery.async_recover(self, state)
        except BaseException:
            with contextlib.suppress(Exception):
                await starting
            await self.writer.async_stop()
            if self._own_source is not None:
                await self._own_source.async_stop()
            raise
        freeze_heap()
        self._running = True
        self.pipeline.accepting = True
        self._tasks = [
            asyncio.create_task(self.pipeline.async_run(), name="runtime-writer"),
            asyncio.create_task(
                timers.async_run(self.timers, self._timer_wake, self.clock, self._due),
                name="runtime-timers",
            ),
            asyncio.create_task(self.effects.async_run(), name="runtime-effects"),
            asyncio.create_task(self._config_loop(), name="runtime-config"),
        ]
        await self.webhooks.async_start()
        for channel in self.channels:  # what they told a previous run may not be stored
            channel.resync_presence()
        self.report(True, f"routing, config version {self._config.version}")
        log.info(
            "runtime started node=%s config_version=%d tasks_in_flight=%d experts=%d queues=%d",
            self.node,
            self._config.version,
            len(self.views.live),
            len(self._config.experts),
            len(self._config.queues),
        )

    def restore_committed_config(self) -> None:
        """The configuration of the last committed batch (after a rewind)."""
        self._config, self._doc = self.committed_config

    async def async_stop(self) -> None:
        """Stop taking operations, finish the current batch, stop the workers; every caller
        still waiting is answered (503)."""
        if not self._running:
            return
        self._running = False
        await self.pipeline.async_drain()
        await self.effects.async_close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        self.pipeline.answer_the_rest()
        await self.writer.async_stop()
        await self.webhooks.async_stop()
        if self._own_source is not None:
            await self._own_source.async_stop()
        self.report(False, "stopped")
        self.views.release_waiters()
        log.info("runtime stopped node=%s commits=%d", self.node, self.commits)

    # --- operations ------------------------------------------------------------------------

    def handle(self, event: ev.Event) -> list[cmd.Command]:
        """Run one event through the core (on the writer) and turn its commands into rows."""
        assert self.core is not None
        now = self.clock()
        commands = self.core.handle(event, now)
        self.batch.absorb(commands, now)
        return commands

    # TaskPort (the bodies: ``operations.py``) -------------------------------------------------

    async def async_create_task(self, request: TaskRequest) -> TaskView:
        return (await self.ops.async_create_task(request))[0]

    async def async_create_task_ex(self, request: TaskRequest) -> tuple[TaskView, bool]:
        """Create a task; returns (view, created). The same ``external_id`` gives the same task."""
        return await self.ops.async_create_task(request)

    async def async_task_event(
        self,
        task_id: str,
        type: TaskEventType,
        disposition: int | None = None,
        handed_off: bool = False,
    ) -> TaskView:
        return await self.ops.async_task_event(task_id, type, disposition, handed_off)

    async def async_delivery_failed(self, task_id: str, disposition: int) -> TaskView:
        return await self.ops.async_delivery_failed(task_id, disposition)

    def task(self, task_id: str) -> TaskView | None:
        """The committed view of a task in flight or recently ended (None: ask the database)."""
        return self.views.task(task_id)

    async def async_task(self, task_id: str) -> TaskView | None:
        """Like ``task`` but also finds tasks ended long ago (database)."""
        return await self.ops.async_task(task_id)

    async def async_wait_change(
        self, task_id: str, seen_status: str, timeout: float
    ) -> TaskView | None:
        return await self.ops.async_wait_change(task_id, seen_status, timeout)

    def queue(self, queue_id: str) -> QueueSpec | None:
        return self._config.queues.get(queue_id)

    # RoutingPort -----------------------------------------------------------------------------

    async def async_set_presence(
        self, expert_id: str, status: Presence, source: str = "rest"
    ) -> None:
        await self.ops.async_set_presence(expert_id, status, source)

    async def async_accept(self, offer_id: str, phone: str | None = None) -> AnswerResult:
        return await self.ops.async_accept(offer_id, phone)

    async def async_decline(self, offer_id: str) -> AnswerResult:
        return await self.ops.async_decline(offer_id)

    def open_offers(self, expert_id: str) -> list[OfferView]:
        return self.views.offers_of(expert_id)

    def offer(self, offer_id: str) -> OfferView | None:
        view = self.views.offers.get(offer_id)
        if view is None and self.core is not None and (o := self.core.export_offer(offer_id)):
            view = self.offer_view(o)
        return view

    def expert(self, expert_id: str) -> ExpertSpec | None:
        return self._config.experts.get(expert_id)

    def expert_by_im(self, address: str) -> ExpertSpec | None:
        bare = address.split("/", 1)[0].lower()
        for spec in self._config.experts.values():
            if spec.im and spec.im.lower() == bare:
                return spec
        return None

    # live state ------------------------------------------------------------------------------

    def expert_state(self, expert_id: str) -> dict[str, Any] | None:
        if self.core is None:
            return None
        offers = [o.id for o in self.open_offers(expert_id)]
        return live.expert_state(self._config, self.core, expert_id, offers)

    def queue_state(self, queue_id: str) -> dict[str, Any] | None:
        if self.core is None:
            return None
        return live.queue_state(self._config, self.core, self.views, queue_id, self.clock())

    def census(self) -> Census | None:
        """Counts of what is live now (tasks, waiting per queue, experts), for metrics."""
        return self.core.census() if self.core is not None else None

    @property
    def last_feed_id(self) -> int:
        return self.feed.last

    async def async_wait_feed(self, after: int, timeout: float) -> int:
        """Wait until the feed has rows after ``after`` (or timeout); returns the last id."""
        return await self.feed.async_wait(after, timeout)

    # --- a batch: commands in, rows and views out --------------------------------------------

    def close(self) -> Pending:
        """Close the open batch (a stage of the pipeline)."""
        assert self.core is not None
        return self.batch.close(self.core, self.clock(), (self._config, self._doc))

    def publish(self, pending: Pending) -> None:
        """The batch is durable: publish views, wake waiters, perform effects."""
        if pending.config is not None:
            self.committed_config = pending.config
        self.views.publish(pending.views)
        if pending.batch.feed:
            self.metrics.committed(pending.batch)
            self.feed.advance(pending.batch.feed[-1]["id"])
        for effect in pending.effects:
            self.effects.put(effect)
        if pending.views.webhooks:
            self.webhooks.poke()

    def offer_view(self, o: dict[str, Any]) -> OfferView:
        """The view of an exported offer, with its task as the core has it now."""
        t = self.core.export_task(o["task_id"]) if self.core is not None else None
        return projection.offer_view(o, t, self._config, self.show_rules(o["queue_id"]))

    def show_rules(self, queue_id: str) -> dict[str, str]:
        """The queue's ``show`` rules: what an expert may see of its tasks (callers and
        attributes), in every view an expert gets."""
        if self._doc is None:
            return {}
        queue = self._doc.queue_map.get(queue_id)
        return dict(queue.show or {}) if queue is not None else {}

    # --- timers, configuration -----------------------------------------------------------------

    def _due(self, key: TimerKey) -> None:
        self.pipeline.put(Operation(functools.partial(self._fire, key), None, key))

    def _fire(self, key: TimerKey) -> None:
        if key not in self._replay.dropped:  # dropped: its change was refused, twice
            self.handle(ev.TimerFired(key))

    def poke_timers(self) -> None:
        """Look at the timers now (tests that move a fake clock call this)."""
        self._timer_wake.set()

    wake_timers = poke_timers

    async def _config_loop(self) -> None:
        await async_follow(self._source, lambda: self._config.version, self.async_apply_config)

    async def async_apply_config(self, config: RoutingConfig, doc: Any = None) -> None:
        """Switch to a new configuration version (from the source, or directly in tests)."""
        previous = self._config.version

        def apply() -> None:
            self._config = config
            self._doc = doc
            self.handle(ev.ConfigChanged(config))

        await self.pipeline.async_submit(apply)
        freeze_heap()
        log.info(
            "configuration applied version=%d previous=%d experts=%d queues=%d",
            config.version,
            previous,
            len(config.experts),
            len(config.queues),
        )

    def ending(self, task_id: str) -> Operation:
        """An operation (without a caller) ending a task with TCD 27 (Failed Software)."""
        return Operation(
            functools.partial(self.handle, ev.TaskFailed(task_id, recovery.FAILED_SOFTWARE)),
            None,
        )


def create_runtime(ctx: Any) -> RuntimeService:
    """The node's factory: a runtime on the node's database, named after the node."""
    service = RuntimeService(ctx.engine, node=ctx.settings.node, health=ctx.services.health)
    if ctx.services.config_version is None:
        ctx.services.config_version = lambda: service.config.version
    return service
