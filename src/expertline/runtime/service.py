"""The durable runtime around the routing core: a façade over parts with one job each.

Everything that can change routing state (HTTP calls, IM answers, SIP, timers, configuration
changes) becomes an operation of the group-commit ``pipeline``: one writer task owns the
routing core (no locks on core state), runs the waiting operations on it and commits what they
changed in ONE transaction. The ``projection`` turns what the core marked dirty into rows and
views (one builder of a task's view); the committed ``views`` are what callers read (never a
state that a crash could take back); ``effects`` performs the IM texts of a committed batch
with retry; the configuration comes from the node's ``ConfigSource``; ``recovery`` rebuilds
the core from the database at a start and after a refused batch. This module wires them and
implements the ports (``runtime/ports.py``) that adapters use.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Engine

from expertline import limits
from expertline.config.snapshot import ConfigPort
from expertline.config.source import ConfigSource
from expertline.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    Problem,
    Unavailable,
)
from expertline.instants import time_ordered_id
from expertline.metrics import RuntimeMetrics
from expertline.routing import commands as cmd
from expertline.routing import events as ev
from expertline.routing.model import ExpertSpec, Presence, QueueSpec, RoutingConfig
from expertline.routing.records import DELIVERY_FAILURES
from expertline.routing.timers import TimerKey
from expertline.runtime import live, projection, recovery, store
from expertline.runtime.batch import OpenBatch
from expertline.runtime.core_adapter import Census, CoreAdapter
from expertline.runtime.effects import EffectDelivery
from expertline.runtime.follow import async_follow, fixed_config
from expertline.runtime.heap import freeze_heap
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
from expertline.runtime.requests import validate_request
from expertline.runtime.timers import TimerHeap
from expertline.runtime.views import CommittedViews
from expertline.runtime.webhooks import WebhookSender
from expertline.runtime.writer import BatchWriter, writer_for

__all__ = ["WAITING_STATUSES", "RuntimeService", "create_runtime", "task_json"]

log = logging.getLogger("expertline.runtime")

T = TypeVar("T")
Clock = Callable[[], float]

# What a routing client may report, and in which committed statuses (built once, not per call).
_TASK_EVENTS: dict[str, Callable[[str], ev.Event]] = {
    "connected": ev.CallConnected,
    "ended": ev.CallEnded,
    "abandoned": ev.TaskAbandoned,
    "failed": ev.TaskFailed,
}
_TASK_EVENT_ALLOWED: dict[str, frozenset[str]] = {
    "connected": frozenset({"assigned"}),
    "ended": frozenset({"assigned", "connected"}),
    "abandoned": frozenset({"queued", "offered", "assigned"}),
    "failed": frozenset({"queued", "offered", "assigned", "connected"}),
}


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
            self._own_source = (
                fixed_config(engine, config_loader, version_probe, config_poll)
                if config_loader is not None
                else ConfigSource(engine, poll=config_poll)
            )
        self._source: ConfigPort = config or self._own_source  # type: ignore[assignment]
        self.lost_on_recovery = lost_on_recovery or recovery.lost_after_restart
        self._doc: Any = None
        self._config: RoutingConfig = projection.empty_config()
        self._tasks: list[asyncio.Task[None]] = []
        self._running = False
        self.channels: list[ExpertChannel] = []
        self._feed_cond = asyncio.Condition()
        self.last_feed_id = 0
        self.webhooks = WebhookSender(engine, **(webhook_options or {}))
        self.metrics = RuntimeMetrics()  # read at scrape time (``expertline.metrics``)
        self._health = health
        # High availability (``expertline.ha.lease``): the lease token every commit must
        # still hold, and who to tell when a commit finds it stale.
        self.fence: int | None = None
        self.on_fenced: Callable[[], None] | None = None
        self.failover_from: str | None = None  # the other node that routed before this start
        self._reset()

    def _reset(self) -> None:
        """The state of one run; ``async_start`` begins from the database with a new one
        (a standby node starts, stops and starts its runtime as it gains and loses the lease)."""
        self.core: CoreAdapter | None = None
        self.timers = TimerHeap()
        self._timer_wake = asyncio.Event()
        self.views = CommittedViews()
        self.pipeline = Pipeline(self.writer, self, self.node, self.metrics)
        self.effects = EffectDelivery(self.offer, self._config_expert, self._wake_if_running)
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
                drop_timer=lambda key: self.timers.cancel(key),
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

    def _config_expert(self, expert_id: str) -> ExpertSpec | None:
        return self._config.experts.get(expert_id)

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
            self.last_feed_id = self.batch.seq.feed  # a stream resumes from what is stored
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
            asyncio.create_task(self._timer_loop(), name="runtime-timers"),
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

    async def _submit(self, apply: Callable[[], T]) -> T:
        return await self.pipeline.async_submit(apply)

    def handle(self, event: ev.Event) -> list[cmd.Command]:
        """Run one event through the core (on the writer) and turn its commands into rows."""
        assert self.core is not None
        now = self.clock()
        commands = self.core.handle(event, now)
        self.batch.absorb(commands, now)
        return commands

    # TaskPort -------------------------------------------------------------------------------

    async def async_create_task(self, request: TaskRequest) -> TaskView:
        view, _ = await self.async_create_task_ex(request)
        return view

    async def async_create_task_ex(self, request: TaskRequest) -> tuple[TaskView, bool]:
        """Create a task; returns (view, created). The same ``external_id`` gives the same task."""
        problems = validate_request(request)
        if problems:
            raise InvalidInput("invalid task request: " + "; ".join(map(str, problems)), problems)
        if request.external_id:
            existing = await self._existing_by_external(request.external_id)
            if existing is not None:
                return existing, False

        task_id = time_ordered_id()

        def apply() -> tuple[str, bool]:
            if request.external_id and request.external_id in self.views.by_external:
                return self.views.by_external[request.external_id], False
            queue_id = self._resolve_queue(request)
            self.views.meta[task_id] = {
                "origin": request.origin,
                "callback_url": request.callback_url,
                "external_id": request.external_id,
            }
            if request.external_id:
                self.views.by_external[request.external_id] = task_id
            self.handle(
                ev.TaskCreated(
                    task_id=task_id,
                    queue_id=queue_id,
                    channel=request.channel,
                    priority=request.priority,
                    caller=request.caller,
                    dialed_number=request.entry_point,
                    external_id=request.external_id,
                    attributes=dict(request.attributes),
                )
            )
            return task_id, True

        tid, created = await self._submit(apply)
        view = self.task(tid)
        if view is None:  # pragma: no cover - the commit above made it visible
            raise NotFound(f"task {tid} vanished")
        return view, created

    async def _existing_by_external(self, external_id: str) -> TaskView | None:
        tid = self.views.by_external.get(external_id)
        if tid is not None:
            return self.task(tid)
        row = await store.async_read(store.task_by_external_id, self.engine, external_id)
        return projection.task_view_from_row(row) if row else None

    def _resolve_queue(self, request: TaskRequest) -> str:
        if request.queue is not None:
            if request.queue not in self._config.queues:
                raise NotFound(f"unknown queue {request.queue!r}")
            return request.queue
        assert request.entry_point is not None
        queue_id = self._config.entry_points.get(request.entry_point)
        if queue_id is None:
            raise NotFound(f"unknown entry point {request.entry_point!r}")
        return queue_id

    async def async_task_event(
        self,
        task_id: str,
        type: TaskEventType,
        disposition: int | None = None,
        handed_off: bool = False,
    ) -> TaskView:
        if type not in _TASK_EVENTS:
            raise InvalidInput(
                f"unknown event type {type!r}; expected connected, ended, abandoned or failed"
            )
        allowed = _TASK_EVENT_ALLOWED[type]
        event: ev.Event
        if type == "failed":
            event = ev.TaskFailed(task_id, disposition)
        elif type == "ended" and handed_off:
            event = ev.CallEnded(task_id, handed_off=True)
        else:
            event = _TASK_EVENTS[type](task_id)

        def apply() -> None:
            status = self._committed_status(task_id)
            if status not in allowed:
                raise Conflict(
                    f"task {task_id} is {status}; {type!r} applies only when it is "
                    + " or ".join(sorted(allowed))
                )
            if not self.handle(event):
                raise Conflict(f"task {task_id} changed meanwhile; {type!r} no longer applies")

        if self.task(task_id) is None:
            ended = await self.async_task(task_id)
            if ended is None:
                raise NotFound(f"unknown task {task_id!r}")
            raise Conflict(f"task {task_id} is {ended.status}; it has ended")
        await self._submit(apply)
        view = self.task(task_id) or await self.async_task(task_id)
        assert view is not None
        return view

    async def async_delivery_failed(self, task_id: str, disposition: int) -> TaskView:
        if disposition not in DELIVERY_FAILURES:
            raise InvalidInput("disposition must be 19 (ring no answer) or 8 (busy)")

        def apply() -> None:
            status = self._committed_status(task_id)
            if status != "assigned":
                raise Conflict(
                    f"task {task_id} is {status}; a delivery can fail only when assigned"
                )
            if not self.handle(ev.DeliveryFailed(task_id, disposition)):
                raise Conflict(f"task {task_id} changed meanwhile; the delivery failure is ignored")

        await self._submit(apply)
        view = self.task(task_id)
        assert view is not None
        return view

    def task(self, task_id: str) -> TaskView | None:
        """The committed view of a task in flight or recently ended (None: ask the database)."""
        return self.views.task(task_id)

    async def async_task(self, task_id: str) -> TaskView | None:
        """Like ``task`` but also finds tasks ended long ago (database)."""
        view = self.task(task_id)
        if view is not None:
            return view
        if limits.text_problem(task_id, limits.TASK_ID):
            return None  # no task has such an id (and the database may refuse to look it up)
        row = await store.async_read(store.task_row, self.engine, task_id)
        return projection.task_view_from_row(row) if row else None

    async def async_wait_change(
        self, task_id: str, seen_status: str, timeout: float
    ) -> TaskView | None:
        view = self.task(task_id)
        if view is None or view.status != seen_status:
            return view or await self.async_task(task_id)
        await self.views.async_wait_change(task_id, seen_status, timeout)
        return self.task(task_id) or await self.async_task(task_id)

    def queue(self, queue_id: str) -> QueueSpec | None:
        return self._config.queues.get(queue_id)

    def _committed_status(self, task_id: str) -> str:
        """The task's committed status (writer only); NotFound when unknown.

        The core itself ignores an event that does not apply, so an event accepted on the
        committed status but refused by the core (it changed within the open batch) gives no
        commands, and the caller gets a Conflict.
        """
        view = self.task(task_id)
        if view is None:
            raise NotFound(f"unknown task {task_id!r}")
        return view.status

    # RoutingPort -----------------------------------------------------------------------------

    async def async_set_presence(
        self, expert_id: str, status: Presence, source: str = "rest"
    ) -> None:
        if status not in ("available", "away", "dnd", "offline"):
            raise InvalidInput(
                f"unknown presence {status!r}; expected available, away, dnd or offline"
            )
        if expert_id not in self._config.experts:
            raise NotFound(f"unknown expert {expert_id!r}")

        def apply() -> None:
            if expert_id not in self._config.experts:
                raise NotFound(f"unknown expert {expert_id!r}")
            self.handle(ev.PresenceChanged(expert_id, status, source))

        await self._submit(apply)

    async def async_accept(self, offer_id: str, phone: str | None = None) -> AnswerResult:
        if phone is not None and (why := limits.text_problem(phone, limits.LABEL)):
            raise InvalidInput(f"invalid phone: {why}", [Problem("phone", why)])
        return await self._answer(offer_id, ev.OfferAccepted(offer_id, phone))

    async def async_decline(self, offer_id: str) -> AnswerResult:
        return await self._answer(offer_id, ev.OfferDeclined(offer_id))

    async def _answer(self, offer_id: str, event: ev.Event) -> AnswerResult:
        def apply() -> str | None:
            commands = self.handle(event)
            for c in commands:
                if isinstance(c, cmd.AnswerRefused) and c.offer_id == offer_id:
                    return c.reason
            return None

        reason = await self._submit(apply)
        offer = self.views.offers.get(offer_id) or self._offer_from_core(offer_id)
        return AnswerResult(ok=reason is None, offer=offer, reason=reason)

    def open_offers(self, expert_id: str) -> list[OfferView]:
        offers = self.views.open_offers.get(expert_id, {})
        return sorted(offers.values(), key=lambda o: (o.created_at, o.id))

    def offer(self, offer_id: str) -> OfferView | None:
        return self.views.offers.get(offer_id) or self._offer_from_core(offer_id)

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

    async def async_wait_feed(self, after: int, timeout: float) -> int:
        """Wait until the feed has rows after ``after`` (or timeout); returns the last id."""
        if self.last_feed_id > after:
            return self.last_feed_id
        async with self._feed_cond:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._feed_cond.wait_for(lambda: self.last_feed_id > after), timeout
                )
        return self.last_feed_id

    # --- a batch: commands in, rows and views out --------------------------------------------

    def close(self) -> Pending:
        """Close the open batch (a stage of the pipeline)."""
        assert self.core is not None
        return self.batch.close(self.core, self.clock(), (self._config, self._doc))

    def publish(self, pending: Pending) -> None:
        """The batch is durable: publish views, wake waiters, perform effects."""
        if pending.config is not None:
            self.committed_config = pending.config
        for view in pending.views.tasks.values():
            self.views.publish_task(view)
        for offer in pending.views.offers.values():
            self.views.publish_offer(offer)
        if pending.batch.feed:
            self.metrics.committed(pending.batch)
            self.last_feed_id = pending.batch.feed[-1]["id"]
            asyncio.get_running_loop().create_task(self._notify_feed())
        for effect in pending.effects:
            self.effects.put(effect)
        if pending.views.webhooks:
            self.webhooks.poke()

    async def _notify_feed(self) -> None:
        async with self._feed_cond:
            self._feed_cond.notify_all()

    def _offer_from_core(self, offer_id: str) -> OfferView | None:
        if self.core is None:
            return None
        o = self.core.export_offer(offer_id)
        if o is None:
            return None
        return self.offer_view(o)

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

    async def _timer_loop(self) -> None:
        while True:
            self._timer_wake.clear()
            now = self.clock()
            due = self.timers.pop_due(now)
            for key in due:
                self.pipeline.put(Operation(functools.partial(self._fire, key), None, key))
            nxt = self.timers.next_due()
            wait = 1.0 if nxt is None else max(0.0, min(1.0, nxt - now))
            if due and wait == 0.0:
                await asyncio.sleep(0)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._timer_wake.wait(), timeout=wait)

    def _fire(self, key: TimerKey) -> None:
        if key not in self._replay.dropped:  # dropped: its change was refused, twice
            self.handle(ev.TimerFired(key))

    def poke_timers(self) -> None:
        """Look at the timers now (tests that move a fake clock call this)."""
        self._timer_wake.set()

    def wake_timers(self) -> None:
        self._timer_wake.set()

    async def _config_loop(self) -> None:
        await async_follow(self._source, lambda: self._config.version, self.async_apply_config)

    async def async_apply_config(self, config: RoutingConfig, doc: Any = None) -> None:
        """Switch to a new configuration version (from the source, or directly in tests)."""
        previous = self._config.version

        def apply() -> None:
            self._config = config
            self._doc = doc
            self.handle(ev.ConfigChanged(config))

        await self._submit(apply)
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
