"""The durable runtime around the routing core: one writer, group commit, effects after commit.

Everything that can change routing state (HTTP calls, IM answers, SIP, timers, configuration
changes) becomes an *operation* on one queue. A single asyncio task, the writer, owns the
routing core (no locks on core state): it takes every queued operation (up to a bound), lets
the core handle their events, and writes the resulting transitions in ONE database transaction:
feed rows, the current state of every task/offer/expert the core marked dirty, RCD/TCD rows,
the outbox of expert-channel effects and the webhook deliveries. Only after that commit are
the effects performed (IM texts through channels, long-poll waiters woken, webhooks posted)
and the callers answered. Under load many operations share one commit, which is what makes
durable routing fast on SQLite with ``synchronous=FULL``.

Reads (``task``, ``open_offers``, queue/expert state) serve the *committed* view: a caller never
sees a state that a crash could take back.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import gc
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import Engine

from expertline import limits
from expertline.errors import Conflict, ExpertlineError, InvalidInput, NotFound, Problem
from expertline.ha.lease import Fenced
from expertline.instants import time_ordered_id
from expertline.records.feed import EXPERT_STATE, TASK_RECORD
from expertline.routing import commands as cmd
from expertline.routing import events as ev
from expertline.routing.model import ExpertSpec, Presence, QueueSpec, RoutingConfig
from expertline.routing.records import DELIVERY_FAILURES, FAILED_SOFTWARE
from expertline.routing.states import FINAL_TASK, WAITING, TaskStatus
from expertline.runtime import store
from expertline.runtime.core_adapter import CoreAdapter
from expertline.runtime.ports import (
    AnswerResult,
    ExpertChannel,
    OfferView,
    TaskEventType,
    TaskRequest,
    TaskView,
)
from expertline.runtime.replay import Host, Replayer, Superseded
from expertline.runtime.timers import TimerHeap
from expertline.runtime.webhooks import WebhookSender, callback_url_problem
from expertline.runtime.writer import BatchWriter, CommitBehind, CommitRefused, writer_for
from expertline.visibility import apply_show, show_caller

log = logging.getLogger("expertline.runtime")

T = TypeVar("T")
Clock = Callable[[], float]

# The core's statuses as plain strings (views and rows carry them as text).
ACTIVE_STATUSES = frozenset(str(s) for s in TaskStatus if s not in FINAL_TASK)
WAITING_STATUSES = frozenset(str(s) for s in WAITING)
MIN_BATCH = 64  # operations a batch takes at least, when that many wait
MAX_IN_FLIGHT = 4  # closed batches on their way to the database at once
MAX_WAIT = 60.0  # longest long-poll
RECENT_ENDED = 20_000  # ended tasks kept in memory for reads; older ones come from the database

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
_CHANNEL_EFFECTS = (cmd.SendOffer, cmd.WithdrawOffer, cmd.ConfirmAccepted, cmd.NotifyExpert)


class ServiceStopped(ExpertlineError):
    """The runtime is not running (not started, stopping, or standby): HTTP 503."""

    def __init__(self, message: str = "the routing runtime is not running on this node") -> None:
        super().__init__(message, [], "unavailable", 503)


@dataclass
class _Operation:
    """Work for the writer: ``apply`` runs on the writer with the core; its value is returned
    to the caller once the transaction holding its effects has committed."""

    apply: Callable[[], Any]
    future: asyncio.Future[Any] | None
    timer: str | None = None  # the core timer it fires, if that is what it does


@dataclass
class _Effect:
    """A channel effect to perform after commit; ``outbox_id`` is its durable row, if any."""

    channel: ExpertChannel
    kind: str  # offer | withdrawn | accepted | notice
    payload: dict[str, Any]
    outbox_id: int | None


@dataclass
class _Pending:
    """What the current batch produced, beyond the rows: post-commit work."""

    batch: store.Batch = field(default_factory=store.Batch)
    effects: list[_Effect] = field(default_factory=list)
    tasks: dict[str, TaskView] = field(default_factory=dict)  # views at close
    offers: dict[str, OfferView] = field(default_factory=dict)
    webhooks: bool = False
    order: int = 0  # batches in the order they closed
    config: tuple[RoutingConfig, Any] | None = None  # (configuration, document) at close


class RuntimeService:
    """Implements ``TaskPort`` and ``RoutingPort`` over the routing core with durable state."""

    def __init__(
        self,
        engine: Engine,
        *,
        node: str = "local",
        clock: Clock = time.time,
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
        self._config_loader = config_loader or StoreConfigSource()
        self._version_probe = version_probe or _default_version_probe
        self._config_poll = config_poll
        self._lost_on_recovery = lost_on_recovery or lost_after_restart
        self._doc: Any = None
        self._config: RoutingConfig = _empty_config()
        self._tasks: list[asyncio.Task[None]] = []
        self._running = False
        self._channels: list[ExpertChannel] = []
        self._feed_cond = asyncio.Condition()
        self.last_feed_id = 0
        self.commits = 0
        self.webhooks = WebhookSender(engine, **(webhook_options or {}))
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
        self._queue: asyncio.Queue[_Operation] = asyncio.Queue()
        self._core: CoreAdapter | None = None
        self._seq = store.Sequences()
        self._timers = TimerHeap()
        self._timer_wake = asyncio.Event()
        self._effects: asyncio.Queue[_Effect | None] = asyncio.Queue()
        self._outbox_done: list[int] = []
        self._pending = _Pending()
        self._closed = 0  # batches closed
        self._ops_in_flight = 0  # operations in batches handed to the writer, not answered
        self._fenced: Fenced | None = None
        self._writes_failing = False
        self._committed_config: tuple[RoutingConfig, Any] = (self._config, self._doc)
        self._replay = Replayer(
            Host(
                apply=self._apply,
                close=self._collect,
                commit=self._commit,
                publish=self._after_commit,
                rewind=self._rewind,
                ending=self._ending,
                drop_timer=lambda key: self._timers.cancel(key),
                wake=lambda: self._queue.put_nowait(_Operation(lambda: None, None)),
                give_back=lambda done: self._outbox_done.extend(done),
                stopped=lambda: ServiceStopped("this node is no longer the active one; retry"),
            )
        )
        # committed views
        self._views: dict[str, TaskView] = {}
        self._task_meta: dict[str, dict[str, Any]] = {}
        self._ended: OrderedDict[str, TaskView] = OrderedDict()
        self._by_external: dict[str, str] = {}
        self._open_offers: dict[str, dict[str, OfferView]] = {}
        self._offer_index: dict[str, OfferView] = {}
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}

    def _report(self, up: bool, detail: str) -> None:
        """Readiness of the runtime component (``/readyz``): down while commits fail."""
        if self._health is not None:
            self._health.report("runtime", up, detail)

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
    def replay(self) -> Replayer:
        """What the runtime did about batches the database refused (counts, dropped timers)."""
        return self._replay

    def register_channel(self, channel: ExpertChannel) -> None:
        """Add an expert channel (XMPP, ...). Offers to experts it reaches go through it too."""
        if channel not in self._channels:
            self._channels.append(channel)
            log.info("expert channel registered name=%s", channel.name)

    def unregister_channel(self, channel: ExpertChannel) -> None:
        if channel in self._channels:
            self._channels.remove(channel)
            log.info("expert channel unregistered name=%s", channel.name)

    async def async_start(self) -> None:
        """Load configuration and every task in flight, then start taking operations."""
        if self._running:
            return
        self._reset()
        starting = asyncio.create_task(self.writer.async_start())  # meanwhile, read
        try:
            self._config, self._doc = await asyncio.to_thread(self._config_loader, self.engine)
            self._committed_config = (self._config, self._doc)
            self._seq = await asyncio.to_thread(store.load_sequences, self.engine)
            self.last_feed_id = self._seq.feed  # a stream resumes from what is stored
            state = await asyncio.to_thread(store.load_state, self.engine)
            await starting  # a writer that cannot start fails the start
            await self._recover(state)
        except BaseException:
            with contextlib.suppress(Exception):
                await starting
            await self.writer.async_stop()
            raise
        _freeze_heap()
        self._running = True
        self._tasks = [
            asyncio.create_task(self._writer(), name="runtime-writer"),
            asyncio.create_task(self._timer_loop(), name="runtime-timers"),
            asyncio.create_task(self._effect_loop(), name="runtime-effects"),
            asyncio.create_task(self._config_loop(), name="runtime-config"),
        ]
        await self.webhooks.async_start()
        for channel in self._channels:  # what they told a previous run may not be stored
            resync = getattr(channel, "resync_presence", None)
            if callable(resync):
                resync()
        self._report(True, f"routing, config version {self._config.version}")
        log.info(
            "runtime started node=%s config_version=%d tasks_in_flight=%d experts=%d queues=%d",
            self.node,
            self._config.version,
            len(self._views),
            len(self._config.experts),
            len(self._config.queues),
        )

    async def async_stop(self) -> None:
        """Stop taking operations, finish the current batch, stop the workers."""
        if not self._running:
            return
        self._running = False
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Operation(lambda: None, done))
        with contextlib.suppress(Exception):
            await asyncio.wait_for(done, timeout=10)
        await self._effects.put(None)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        await self.writer.async_stop()
        await self.webhooks.async_stop()
        self._report(False, "stopped")
        for waiters in self._waiters.values():
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)
        log.info("runtime stopped node=%s commits=%d", self.node, self.commits)

    # --- operations ------------------------------------------------------------------------

    async def _submit(self, apply: Callable[[], T]) -> T:
        if not self._running:
            raise ServiceStopped("the routing runtime is not running on this node")
        if self._fenced is not None:
            raise ServiceStopped("this node is no longer the active one (another node took over)")
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Operation(apply, fut))
        return await fut

    def _handle(self, event: ev.Event) -> list[cmd.Command]:
        """Run one event through the core (on the writer) and turn its commands into rows."""
        assert self._core is not None
        now = self.clock()
        commands = self._core.handle(event, now)
        self._absorb(commands, now)
        return commands

    # TaskPort -------------------------------------------------------------------------------

    async def async_create_task(self, request: TaskRequest) -> TaskView:
        view, _ = await self.async_create_task_ex(request)
        return view

    async def async_create_task_ex(self, request: TaskRequest) -> tuple[TaskView, bool]:
        """Create a task; returns (view, created). The same ``external_id`` gives the same task."""
        problems = _validate_request(request)
        if problems:
            raise InvalidInput("invalid task request: " + "; ".join(map(str, problems)), problems)
        if request.external_id:
            existing = await self._existing_by_external(request.external_id)
            if existing is not None:
                return existing, False

        task_id = time_ordered_id()

        def apply() -> tuple[str, bool]:
            if request.external_id and request.external_id in self._by_external:
                return self._by_external[request.external_id], False
            queue_id = self._resolve_queue(request)
            self._task_meta[task_id] = {
                "origin": request.origin,
                "callback_url": request.callback_url,
                "external_id": request.external_id,
            }
            if request.external_id:
                self._by_external[request.external_id] = task_id
            self._handle(
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
        tid = self._by_external.get(external_id)
        if tid is not None:
            return self.task(tid)
        row = await asyncio.to_thread(store.task_by_external_id, self.engine, external_id)
        return _view_from_row(row) if row else None

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
        self, task_id: str, type: TaskEventType, disposition: int | None = None
    ) -> TaskView:
        if type not in _TASK_EVENTS:
            raise InvalidInput(
                f"unknown event type {type!r}; expected connected, ended, abandoned or failed"
            )
        allowed = _TASK_EVENT_ALLOWED[type]
        event = (
            ev.TaskFailed(task_id, disposition) if type == "failed" else _TASK_EVENTS[type](task_id)
        )

        def apply() -> None:
            status = self._committed_status(task_id)
            if status not in allowed:
                raise Conflict(
                    f"task {task_id} is {status}; {type!r} applies only when it is "
                    + " or ".join(sorted(allowed))
                )
            if not self._handle(event):
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
            if not self._handle(ev.DeliveryFailed(task_id, disposition)):
                raise Conflict(f"task {task_id} changed meanwhile; the delivery failure is ignored")

        await self._submit(apply)
        view = self.task(task_id)
        assert view is not None
        return view

    def task(self, task_id: str) -> TaskView | None:
        """The committed view of a task in flight or recently ended (None: ask the database)."""
        return self._views.get(task_id) or self._ended.get(task_id)

    async def async_task(self, task_id: str) -> TaskView | None:
        """Like ``task`` but also finds tasks ended long ago (database)."""
        view = self.task(task_id)
        if view is not None:
            return view
        if limits.text_problem(task_id, limits.TASK_ID):
            return None  # no task has such an id (and the database may refuse to look it up)
        row = await asyncio.to_thread(store.task_row, self.engine, task_id)
        return _view_from_row(row) if row else None

    async def async_wait_change(
        self, task_id: str, seen_status: str, timeout: float
    ) -> TaskView | None:
        view = self.task(task_id)
        if view is None or view.status != seen_status:
            return view or await self.async_task(task_id)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(task_id, []).append(fut)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(fut, timeout=max(0.0, min(timeout, MAX_WAIT)))
        finally:
            waiters = self._waiters.get(task_id)
            if waiters is not None:
                with contextlib.suppress(ValueError):
                    waiters.remove(fut)
                if not waiters:
                    self._waiters.pop(task_id, None)
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
            self._handle(ev.PresenceChanged(expert_id, status, source))

        await self._submit(apply)

    async def async_accept(self, offer_id: str, phone: str | None = None) -> AnswerResult:
        if phone is not None and (why := limits.text_problem(phone, limits.LABEL)):
            raise InvalidInput(f"invalid phone: {why}", [Problem("phone", why)])
        return await self._answer(offer_id, ev.OfferAccepted(offer_id, phone))

    async def async_decline(self, offer_id: str) -> AnswerResult:
        return await self._answer(offer_id, ev.OfferDeclined(offer_id))

    async def _answer(self, offer_id: str, event: ev.Event) -> AnswerResult:
        def apply() -> str | None:
            commands = self._handle(event)
            for c in commands:
                if isinstance(c, cmd.AnswerRefused) and c.offer_id == offer_id:
                    return c.reason
            return None

        reason = await self._submit(apply)
        offer = self._offer_index.get(offer_id) or self._offer_from_core(offer_id)
        return AnswerResult(ok=reason is None, offer=offer, reason=reason)

    def open_offers(self, expert_id: str) -> list[OfferView]:
        offers = self._open_offers.get(expert_id, {})
        return sorted(offers.values(), key=lambda o: (o.created_at, o.id))

    def offer(self, offer_id: str) -> OfferView | None:
        return self._offer_index.get(offer_id) or self._offer_from_core(offer_id)

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
        spec = self._config.experts.get(expert_id)
        if spec is None or self._core is None:
            return None
        state = self._core.expert(expert_id)
        open_offers = [o.id for o in self.open_offers(expert_id)]
        return {
            "id": expert_id,
            "name": spec.name,
            "presence": state.presence if state else "offline",
            "state": state.state if state else "offline",
            "active_tasks": list(state.tasks) if state else [],
            "max_tasks": spec.max_tasks,
            "open_offers": open_offers,
            "wrap_up_until": store.iso(state.wrap_up_until) if state else None,
            "enabled": spec.enabled,
        }

    def queue_state(self, queue_id: str) -> dict[str, Any] | None:
        spec = self._config.queues.get(queue_id)
        if spec is None or self._core is None:
            return None
        now = self.clock()
        waiting = [
            v for v in self._views.values() if v.queue == queue_id and v.status in WAITING_STATUSES
        ]
        oldest = min((v.extra.get("_created_ts", now) for v in waiting), default=None)
        members = self._config.matches.get(queue_id, (frozenset(),))
        eligible = sorted(set().union(*members)) if members else []
        available = [e for e in eligible if self._core.is_available(e)]
        return {
            "id": queue_id,
            "name": spec.name,
            "waiting": len(waiting),
            "waiting_tasks": [v.id for v in sorted(waiting, key=lambda v: v.created_at)][:100],
            "longest_wait": round(now - oldest, 3) if oldest is not None else 0.0,
            "eligible_experts": len(eligible),
            "available_experts": len(available),
            "available": available[:100],
        }

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

    # --- the writer ------------------------------------------------------------------------

    async def _writer(self) -> None:
        """Handle batches while earlier ones commit; commits and publication stay in order.

        A batch takes half of the operations waiting (at least ``MIN_BATCH``, at most the
        writer's ``batch_ops``) and goes to the writer as soon as it closes (up to
        ``MAX_IN_FLIGHT`` on their way). Callers wait for their commit before sending more,
        so one batch of everything would leave the core idle while the database works and
        the database idle while the core works; two halves keep both busy. Each batch is
        closed with snapshots of what changed, so publishing a batch after its commit never
        shows the state of a later, not yet durable, batch.
        """
        in_flight: collections.deque[asyncio.Task[None]] = collections.deque()
        try:
            while True:
                first = await self._queue.get()
                if self._replay.wanted:  # a batch was refused (``runtime/replay.py``)
                    await asyncio.gather(*in_flight, return_exceptions=True)
                    in_flight.clear()
                    try:
                        await self._replay.async_run()
                    except Exception:  # the writer must go on; its callers must hear back
                        log.exception("replaying a refused batch failed")
                        self._replay.abandon(ServiceStopped("the change could not be replayed"))
                waiting = self._queue.qsize() + 1 + self._ops_in_flight  # callers not answered
                limit = min(self.writer.batch_ops, max(MIN_BATCH, waiting // 2))
                results = [self._apply(first)]
                while len(results) < limit and not self._queue.empty():
                    results.append(self._apply(self._queue.get_nowait()))
                pending = self._collect()
                while in_flight and in_flight[0].done():
                    in_flight.popleft()
                if len(in_flight) >= MAX_IN_FLIGHT:
                    await asyncio.wait([in_flight[0]])
                    in_flight.popleft()
                previous = in_flight[-1] if in_flight else None
                self._ops_in_flight += len(results)
                in_flight.append(asyncio.create_task(self._finish(pending, results, previous)))
                await asyncio.sleep(0)  # the batch leaves now, not when the queue is empty
        finally:
            if in_flight:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(asyncio.shield(asyncio.gather(*in_flight)), timeout=10)
            self._replay.abandon(ServiceStopped())

    def _apply(self, op: _Operation) -> tuple[_Operation, bool, Any]:
        """Run one operation on the core; typed failures go back to their caller."""
        try:
            return op, True, op.apply()
        except Exception as exc:
            if not isinstance(exc, InvalidInput | NotFound | Conflict):
                log.exception("operation failed error=%r", exc)
            return op, False, exc

    async def _finish(
        self,
        pending: _Pending,
        results: list[tuple[_Operation, bool, Any]],
        previous: asyncio.Task[None] | None,
    ) -> None:
        """Commit a closed batch, then (after the batch before it) publish it and answer its
        callers."""
        try:
            if not pending.batch.empty():
                await self._commit(pending.batch, previous)
        except Fenced:
            # Nothing of this batch is durable and another node runs from the database now:
            # its callers get 503, nothing is published, no effect leaves.
            refused = "this node is no longer the active one; retry"
            results = [(op, False, ServiceStopped(refused)) for op, _, _ in results]
        except (CommitRefused, Superseded) as exc:
            # Not durable, and never retried as is: its operations are replayed one by one,
            # and their callers answered then (``runtime/replay.py``).
            self._ops_in_flight -= len(results)
            self._replay.hold(pending, results, getattr(exc, "reason", None))
            return
        else:
            if previous is not None:
                await asyncio.wait([previous])
            if self._replay.after_refusal(pending.order):  # ran on state being undone
                self._ops_in_flight -= len(results)
                self._replay.hold(pending, results)
                return
            try:
                self._after_commit(pending)
            except Exception:  # publishing must not stop the writer
                log.exception("publishing a committed batch failed")
        self._ops_in_flight -= len(results)
        for op, ok, value in results:
            if op.future is None or op.future.done():
                continue
            if ok:
                op.future.set_result(value)
            else:
                op.future.set_exception(value)

    async def _commit(self, batch: store.Batch, previous: asyncio.Task[None] | None = None) -> None:
        """Commit one batch; while the database is away retry with capped backoff until it
        lands. A batch the database refuses (``CommitRefused``) is not retried, and neither
        is one closed after it (``Superseded``): the replayer splits them. ``previous``: the
        batch before it, which commits first."""
        delay = 0.05
        while True:
            if self._replay.overtaken(batch.seq):
                raise Superseded(f"batch {batch.seq} follows a refused batch")
            started = time.perf_counter()
            try:
                written = await self.writer.async_write(batch)
            except Fenced as exc:
                self._fence_tripped(exc)
                raise
            except CommitRefused:
                raise
            except Exception as exc:
                if isinstance(exc, CommitBehind) and previous is not None and not previous.done():
                    await asyncio.wait([previous])  # it lands, or is refused, first
                    continue
                self._writes_failing = True
                self._report(False, f"database writes failing: {str(exc)[:200]}")
                log.error(
                    "commit failed rows=%d error=%r; retrying in %.2fs (state is kept in memory)",
                    batch.rows(),
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if not written:
                log.info("batch was already committed seq=%s", batch.seq)
            self.commits += 1
            if self._writes_failing:
                self._writes_failing = False
                self._report(True, "database writable again")
                log.info("commit succeeded after retries rows=%d", batch.rows())
            elapsed = time.perf_counter() - started
            if elapsed > 1.0:
                log.warning("slow commit seconds=%.3f rows=%d", elapsed, batch.rows())
            return

    def _fence_tripped(self, exc: Fenced) -> None:
        """A commit found another node holding the lease: take no more operations, and tell
        the lease keeper (it stops this runtime; the other node recovers from the database)."""
        if self._fenced is not None:
            return
        self._fenced = exc
        log.error("commit refused node=%s: %s; leaving the active role", self.node, exc)
        self._report(False, "fenced: another node is active")
        if self.on_fenced is not None:
            self.on_fenced()

    def _collect(self) -> _Pending:
        """Close the current batch: add the state of everything the core marked dirty."""
        assert self._core is not None
        pending = self._pending
        self._pending = _Pending()
        batch = pending.batch
        now = self.clock()
        at = now  # rows carry times as POSIX seconds; the writer converts them
        dirty = self._core.drain_dirty()
        core = self._core
        exported: dict[str, dict[str, Any]] = {}  # this batch's task snapshots, for offer views
        for tid in dirty.tasks:
            d = core.export_task(tid)  # a fresh dict: the row's state and the view's source
            if d is None:
                continue
            exported[tid] = d
            meta = self._task_meta.get(tid, {})
            view = pending.tasks[tid] = self._view_of(d, meta)
            d["_meta"] = dict(meta)
            batch.tasks[tid] = {
                "task_id": tid,
                "code": view.code,
                "external_id": d["external_id"],
                "status": view.status,
                "active": d["active"],
                "queue_id": view.queue,
                "expert_id": view.expert,
                "label": view.label,
                "origin": meta.get("origin", "http"),
                "callback_url": meta.get("callback_url"),
                "created_at": d["created_at"],
                "updated_at": at,
                "state": d,
            }
            url = meta.get("callback_url")
            old = (self._views.get(tid) or self._ended.get(tid)) if url else None
            if url and (old is None or old.status != view.status or old.label != view.label):
                batch.webhooks.append(
                    {
                        "id": self._seq.take("webhook"),
                        "task_id": tid,
                        "url": url,
                        "body": {
                            "event": "task.status",
                            "task": _view_json(view),
                            "at": store.iso(now),
                        },
                        "created_at": at,
                        "attempts": 0,
                        "next_attempt_at": at,
                        "delivered_at": None,
                        "failed_at": None,
                        "last_error": None,
                    }
                )
                pending.webhooks = True
        for oid in dirty.offers:
            o = core.export_offer(oid)
            if o is None:
                continue
            pending.offers[oid] = self._offer_view(o, exported.get(o["task_id"]))
            batch.offers[oid] = {
                "offer_id": oid,
                "task_id": o["task_id"],
                "expert_id": o["expert_id"],
                "status": o["status"],
                "updated_at": at,
                "state": o,
            }
        for eid in dirty.experts:
            export = core.export_expert(eid)
            if export is None:
                continue
            batch.experts[eid] = {"expert_id": eid, "updated_at": at, "state": export}
        if dirty.meta:
            batch.meta["core"] = self._core.export_meta()
        if self._outbox_done:
            batch.outbox_done, self._outbox_done = self._outbox_done, []
        if not batch.empty():
            batch.seq = self._seq.take("batch")
            batch.fence = self.fence
        self._closed += 1
        pending.order = self._closed
        pending.config = (self._config, self._doc)
        return pending

    def _absorb(self, commands: list[cmd.Command], now: float) -> None:
        """Turn the core's commands into rows of the current batch and post-commit effects."""
        pending = self._pending
        feed = pending.batch.feed
        seq = self._seq
        at = now
        emit = cmd.Emit
        for c in commands:
            if type(c) is emit:
                # The core builds a fresh dict for every Emit, so it is stored as is.
                data = c.data
                if c.type == TASK_RECORD:
                    data["node"] = data.get("node") or self.node
                    data.setdefault("config_version", self._config.version)
                elif c.type == EXPERT_STATE and "config_version" not in data:
                    data = {"config_version": self._config.version, **data}
                seq.feed += 1
                feed.append(
                    {
                        "id": seq.feed,
                        "type": c.type,
                        "task_id": data.get("task_id"),
                        "expert_id": data.get("expert_id"),
                        "data": data,
                        "created_at": at,
                    }
                )
            elif isinstance(c, cmd.WriteRecord):
                self._record(c, now)
            elif isinstance(c, cmd.SetTimer):
                self._timers.set(c.key, c.at)
                self._timer_wake.set()
            elif isinstance(c, cmd.CancelTimer):
                self._timers.cancel(c.key)
            elif isinstance(c, _CHANNEL_EFFECTS):
                self._channel_effect(c, at)
            # ReturnLabel: the label is part of the task's state (view, webhook, RCD record);
            # AnswerRefused: returned to whoever answered.

    def _record(self, c: cmd.WriteRecord, now: float) -> None:
        data = _jsonable(c.data)
        batch = self._pending.batch
        if c.kind == "attempt":
            batch.feed.append(
                {
                    "id": self._seq.take("feed"),
                    "type": "task.attempt",
                    "task_id": data.get("task_id"),
                    "expert_id": data.get("expert_id"),
                    "data": data,
                    "created_at": now,
                }
            )
            return
        when = data.get("at") or data.get("ended_at") or now
        row: dict[str, Any] = {
            "recovery_key": self._seq.take(c.kind),
            "datetime": float(when) if isinstance(when, int | float) else now,
            "task_id": data["task_id"],
            "peripheral_call_key": data.get("peripheral_call_key"),
            "router_call_key": data.get("router_call_key"),
            "dialed_number": data.get("dialed_number"),
            "ani": data.get("ani"),
            "expert_id": data.get("expert_id"),
            "queue_id": data.get("queue_id"),
            "node": self.node,
            "data": data,
        }
        if c.kind == "rcd":
            row["label"] = data.get("label")
            batch.rcd.append(row)
        else:
            row["call_disposition"] = int(data["call_disposition"])
            meta = self._task_meta.setdefault(row["task_id"], {})
            meta["call_disposition"] = row["call_disposition"]
            for name in ("duration", "delay_time", "ring_time", "talk_time", "work_time"):
                row[name] = float(data.get(name) or 0.0)
            batch.tcd.append(row)

    def _channel_effect(self, c: cmd.Command, at: float) -> None:
        expert_id = getattr(c, "expert_id", None)
        spec = self._config.experts.get(expert_id) if expert_id else None
        if spec is None or not self._channels:
            return
        kind, payload = _effect_payload(c)
        for channel in self._channels:
            try:
                reaches = channel.reaches(spec)
            except Exception:  # a broken channel must not stop routing
                log.exception("channel reaches() failed channel=%s", channel.name)
                continue
            if not reaches:
                continue
            outbox_id = self._seq.take("outbox")
            self._pending.batch.outbox.append(
                {
                    "id": outbox_id,
                    "channel": channel.name,
                    "kind": kind,
                    "expert_id": spec.id,
                    "payload": payload,
                    "created_at": at,
                }
            )
            self._pending.effects.append(_Effect(channel, kind, payload, outbox_id))

    def _after_commit(self, pending: _Pending) -> None:
        """The batch is durable: publish views, wake waiters, perform effects."""
        assert self._core is not None
        if pending.config is not None:
            self._committed_config = pending.config
        for tid, view in pending.tasks.items():
            old = self._views.get(tid)
            if view.status in ACTIVE_STATUSES:
                self._views[tid] = view
            else:
                self._views.pop(tid, None)
                self._ended[tid] = view
                self._ended.move_to_end(tid)
                while len(self._ended) > RECENT_ENDED:
                    gone, gone_view = self._ended.popitem(last=False)
                    self._task_meta.pop(gone, None)
                    external_id = gone_view.extra.get("external_id")
                    if external_id and self._by_external.get(external_id) == gone:
                        del self._by_external[external_id]
            if old is None or old.status != view.status:
                for fut in self._waiters.pop(tid, []):
                    if not fut.done():
                        fut.set_result(None)
        for offer in pending.offers.values():
            self._publish_offer(offer)
        if pending.batch.feed:
            self.last_feed_id = pending.batch.feed[-1]["id"]
            asyncio.get_running_loop().create_task(self._notify_feed())
        for effect in pending.effects:
            self._effects.put_nowait(effect)
        if pending.webhooks:
            self.webhooks.poke()

    async def _notify_feed(self) -> None:
        async with self._feed_cond:
            self._feed_cond.notify_all()

    def _publish_offer(self, view: OfferView) -> None:
        offer_id = view.id
        self._offer_index[offer_id] = view
        per_expert = self._open_offers.setdefault(view.expert_id, {})
        if view.status == "open":
            per_expert[offer_id] = view
        else:
            per_expert.pop(offer_id, None)
            if not per_expert:
                self._open_offers.pop(view.expert_id, None)
            if len(self._offer_index) > 4 * RECENT_ENDED:
                for stale in list(self._offer_index)[:RECENT_ENDED]:
                    if self._offer_index[stale].status != "open":
                        del self._offer_index[stale]

    def _offer_from_core(self, offer_id: str) -> OfferView | None:
        if self._core is None:
            return None
        o = self._core.export_offer(offer_id)
        if o is None:
            return None
        return self._offer_view(o, None)

    def _offer_view(self, o: dict[str, Any], t: dict[str, Any] | None) -> OfferView:
        """The API/IM view of an exported offer; ``t``: its task's export, when at hand."""
        if t is None and self._core is not None:
            t = self._core.export_task(o["task_id"])
        queue_id = o["queue_id"]
        queue = self._config.queues.get(queue_id)
        rules = self.show_rules(queue_id)
        return OfferView(
            id=o["id"],
            task_id=o["task_id"],
            code=o["code"],
            expert_id=o["expert_id"],
            status=str(o["status"]),
            queue_id=queue_id,
            queue_name=queue.name if queue else queue_id,
            caller=show_caller(t["caller"], rules) if t else None,
            created_at=float(o["created_at"]),
            expires_at=o["expires_at"],
            task_created_at=float(t["created_at"] if t else o["created_at"]),
            notice_only=bool(o["notice_only"]),
            shown_attributes=apply_show(t["attributes"] if t else {}, rules),
        )

    def show_rules(self, queue_id: str) -> dict[str, str]:
        """The queue's ``show`` rules: what an expert may see of its tasks (callers and
        attributes), in every view an expert gets."""
        if self._doc is None:
            return {}
        queue = getattr(self._doc, "queue_map", {}).get(queue_id)
        return dict(getattr(queue, "show", {}) or {})

    def _view_of(self, d: dict[str, Any], meta: dict[str, Any]) -> TaskView:
        """The API view of an exported task (``RoutingCore.export_task``) and its metadata."""
        tid = d["id"]
        old = self._views.get(tid)
        created_ts = d["created_at"]
        created = old.created_at if old is not None else store.iso(created_ts) or ""
        ended = d["ended_at"]
        return TaskView(
            id=tid,
            code=d["code"],
            status=d["status"],
            queue=d["queue_id"],
            expert=d["expert_id"],
            label=d["label"],
            created_at=created,
            extra={
                "channel": d["channel"],
                "caller": d["caller"],
                "priority": d["priority"],
                "external_id": d["external_id"],
                "dialed_number": d["dialed_number"],
                "call_disposition": meta.get("call_disposition"),
                "ended_at": None if ended is None else store.iso(ended),
                "origin": meta.get("origin", "http"),
                "callback_url": meta.get("callback_url"),
                "offers": [{"id": oid, "expert": eid} for eid, oid in d["open_offers"].items()],
                "_created_ts": created_ts,
            },
        )

    # --- timers, effects, configuration --------------------------------------------------------

    async def _timer_loop(self) -> None:
        while True:
            self._timer_wake.clear()
            now = self.clock()
            due = self._timers.pop_due(now)
            for key in due:
                self._queue.put_nowait(_Operation(functools.partial(self._fire, key), None, key))
            nxt = self._timers.next_due()
            wait = 1.0 if nxt is None else max(0.0, min(1.0, nxt - now))
            if due and wait == 0.0:
                await asyncio.sleep(0)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._timer_wake.wait(), timeout=wait)

    def _fire(self, key: str) -> None:
        if key not in self._replay.dropped:  # dropped: its change was refused, twice
            self._handle(ev.TimerFired(key))

    def poke_timers(self) -> None:
        """Look at the timers now (tests that move a fake clock call this)."""
        self._timer_wake.set()

    async def _effect_loop(self) -> None:
        while True:
            effect = await self._effects.get()
            if effect is None:
                return
            await self._perform(effect)

    async def _perform(self, effect: _Effect) -> None:
        delay = 0.2
        for attempt in range(1, 4):
            try:
                await asyncio.wait_for(self._call_channel(effect), timeout=10.0)
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "channel effect failed channel=%s kind=%s attempt=%d error=%r",
                    effect.channel.name,
                    effect.kind,
                    attempt,
                    exc,
                )
                if attempt == 3:
                    log.error(
                        "channel effect dropped channel=%s kind=%s expert=%s after 3 attempts",
                        effect.channel.name,
                        effect.kind,
                        effect.payload.get("expert_id"),
                    )
                    break
                await asyncio.sleep(delay)
                delay *= 4
        if effect.outbox_id is not None:
            self._outbox_done.append(effect.outbox_id)
            if len(self._outbox_done) == 1 and self._running:
                # The deletion rides the next batch; make sure there is one even when idle.
                self._queue.put_nowait(_Operation(lambda: None, None))

    async def _call_channel(self, effect: _Effect) -> None:
        p = effect.payload
        if effect.kind == "notice":
            spec = self._config.experts.get(p["expert_id"])
            if spec is not None:
                await effect.channel.async_notice(spec, p["message"])
            return
        offer = self.offer(p["offer_id"]) or _offer_from_payload(p)
        if effect.kind == "offer":
            await effect.channel.async_offer(offer)
        elif effect.kind == "withdrawn":
            await effect.channel.async_withdrawn(offer, p.get("reason", "ended"))
        elif effect.kind == "accepted":
            await effect.channel.async_accepted(offer)

    async def _config_loop(self) -> None:
        refused = -1  # a version whose change the database refused is not tried again
        while True:
            await asyncio.sleep(self._config_poll)
            try:
                version = await asyncio.to_thread(self._version_probe, self.engine)
                if version in (self._config.version, refused):
                    continue
                config, doc = await asyncio.to_thread(self._config_loader, self.engine)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("configuration reload failed error=%r; keeping the current one", exc)
                continue
            try:
                await self.async_apply_config(config, doc)
            except ExpertlineError as exc:
                refused = version
                log.error("configuration version %d not applied: %s", version, exc)

    async def async_apply_config(self, config: RoutingConfig, doc: Any = None) -> None:
        """Switch to a new configuration version (from the poller, or directly in tests)."""
        previous = self._config.version

        def apply() -> None:
            self._config = config
            self._doc = doc
            self._handle(ev.ConfigChanged(config))

        await self._submit(apply)
        _freeze_heap()
        log.info(
            "configuration applied version=%d previous=%d experts=%d queues=%d",
            config.version,
            previous,
            len(config.experts),
            len(config.queues),
        )

    # --- recovery --------------------------------------------------------------------------

    async def _recover(self, state: store.StoredState) -> None:
        """Rebuild the core from the database; end tasks whose outcome cannot be known."""
        lost = frozenset(row["task_id"] for row in state.tasks if self._lost_on_recovery(row))
        try:
            await self._restore(state, lost, self.failover_from is not None)
        except CommitRefused as exc:
            # Ending the lost tasks wrote something the database refuses (a record of a task
            # stored before its values were bounded): recover without ending them, then end
            # each in a batch of its own, where a refusal touches that task alone.
            log.error(
                "recovery batch refused by the database reason=%s; the lost tasks (%d) "
                "end one by one",
                exc.reason,
                len(lost),
            )
            self._seq = await asyncio.to_thread(store.load_sequences, self.engine)
            self._timers = TimerHeap()
            self._pending = _Pending()
            self._outbox_done = []
            await self._restore(state, frozenset(), self.failover_from is not None)
            for task_id in sorted(lost):
                self._queue.put_nowait(self._ending(task_id))
        if state.tasks:
            log.info(
                "recovered tasks=%d offers=%d lost=%d (ended with TCD 27: %s)",
                len(state.tasks),
                len(state.offers),
                len(lost),
                "SIP calls whose legs lived in the previous process" if lost else "none",
            )

    async def _restore(
        self, state: store.StoredState, lost: frozenset[str], failover: bool, resume: bool = True
    ) -> None:
        """The core from ``state``; ``resume``: perform the stored effects (a start)."""
        self._remember(state)
        now = self.clock()
        self._core = CoreAdapter.restore(self._config, state, now)
        # Re-arms every timer of the restored tasks and ends the lost ones (TCD 27).
        self._handle(ev.Recovered(lost_tasks=lost, failover=failover))
        # Undelivered channel effects of the previous run are performed again.
        for row in state.outbox if resume else ():
            channel = next((c for c in self._channels if c.name == row["channel"]), None)
            if channel is None:
                self._outbox_done.append(row["id"])
                continue
            self._pending.effects.append(_Effect(channel, row["kind"], row["payload"], row["id"]))
        pending = self._collect()
        for row in state.tasks:
            restored = self._core.export_task(row["task_id"])
            if restored is not None and restored["id"] not in pending.tasks:
                meta = self._task_meta.get(restored["id"], {})
                pending.tasks[restored["id"]] = self._view_of(restored, meta)
        for row in state.offers:
            offer = self._core.export_offer(row["offer_id"])
            if offer is not None and offer["id"] not in pending.offers:
                pending.offers[offer["id"]] = self._offer_view(offer, None)
        if not pending.batch.empty():
            await self._commit(pending.batch)
        self._after_commit(pending)

    def _remember(self, state: store.StoredState) -> None:
        """The metadata of the stored tasks in flight (origin, callback, external id)."""
        for row in state.tasks:
            meta = (row.get("state") or {}).get("_meta") or {}
            self._task_meta[row["task_id"]] = {
                "origin": row.get("origin") or meta.get("origin", "http"),
                "callback_url": row.get("callback_url"),
                "external_id": row.get("external_id"),
            }
            if row.get("external_id"):
                self._by_external[row["external_id"]] = row["task_id"]

    async def _rewind(self) -> None:
        """Set the core back to the committed state after a refused batch (``replay.py``).

        The database is read back as a restart reads it, but nothing of a restart follows: no
        task is lost, no expert is told of a failover, no effect is performed again. Views,
        waiters and effects only ever saw committed batches, so they stay as they are; what
        the uncommitted batches added to them (tasks, external ids, timers) goes.
        """
        delay = 0.05
        while True:  # the database may be away now: wait for it as commits do
            try:
                state = await asyncio.to_thread(store.load_state, self.engine)
                self._seq = await asyncio.to_thread(store.load_sequences, self.engine)
                break
            except Exception as exc:
                self._writes_failing = True
                self._report(False, f"database reads failing: {type(exc).__name__}")
                log.error("reading the committed state failed error=%r; retrying", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        if self._writes_failing:
            self._writes_failing = False
            self._report(True, "database reachable again")
        self._config, self._doc = self._committed_config
        known = self._views.keys() | self._ended.keys()
        for task_id in [t for t in self._task_meta if t not in known]:
            del self._task_meta[task_id]
        for external_id in [e for e, t in self._by_external.items() if t not in known]:
            del self._by_external[external_id]
        self._timers = TimerHeap()
        self._pending = _Pending()
        try:
            await self._restore(state, frozenset(), failover=False, resume=False)
        except CommitRefused as exc:  # the committed state settled differently: unexpected
            log.error("rewound state could not be settled reason=%s", exc.reason)
        self._timer_wake.set()

    def _ending(self, task_id: str) -> _Operation:
        """An operation (without a caller) ending a task with TCD 27 (Failed Software)."""
        return _Operation(
            functools.partial(self._handle, ev.TaskFailed(task_id, FAILED_SOFTWARE)), None
        )


# Collect the young generation after 100,000 new container objects instead of 700, the
# middle one every 20 of those, everything every 100 of these.
GC_THRESHOLDS = (100_000, 20, 100)


def _freeze_heap() -> None:
    """Move what exists now (the configuration, its indexes, tasks in flight) out of the cyclic
    garbage collector's sight, and make its collections rare.

    The configuration, its indexes and the experts' live state are long-lived objects (over
    a hundred thousand at 100,000 experts); every full collection would walk them again while
    the writer waits, and under load full collections come often (each batch allocates rows,
    views and snapshots): measured, they more than halved durable throughput. Frozen objects
    are still freed by reference counting; only cycles among them stay until the process
    ends, and a configuration version is built once.

    What the runtime allocates under load (rows, snapshots, views, futures) is freed by
    reference counting, but every collection walks what is alive: the rows of the batches
    in flight. At the default thresholds collections took about a fifth of the event loop's
    CPU (1,264 young, 115 middle and 11 full ones in 10,000 lifecycles); at these, about
    20 % fewer CPU seconds per lifecycle. Cycles (an exception's traceback) are still
    collected, later.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def lost_after_restart(row: dict[str, Any]) -> bool:
    """Whether a task in flight cannot continue after the runtime restarted.

    SIP-originated tasks: the caller's INVITE transaction (and in proxy mode both call legs)
    lived in the previous process, so the new one can neither answer the caller nor see the
    call end; their outcome is unknown (TCD 27). HTTP tasks continue: the routing client holds
    the task id and keeps polling and reporting.
    """
    return row.get("origin") == "sip"


# --- helpers -------------------------------------------------------------------------------


def _validate_request(request: TaskRequest) -> list[Problem]:
    """Every problem with a request, whichever way it came in (HTTP, SIP, tests): the same
    limits as the HTTP model and the database columns (``expertline.limits``)."""
    problems: list[Problem] = []
    if (request.entry_point is None) == (request.queue is None):
        problems.append(Problem("", "give exactly one of entry_point or queue"))
    if request.channel not in ("voice", "chat"):
        problems.append(Problem("channel", "must be voice or chat"))
    low, high = limits.PRIORITY
    if request.priority is not None and (
        isinstance(request.priority, bool)
        or not isinstance(request.priority, int)
        or not low <= request.priority <= high
    ):
        problems.append(Problem("priority", f"must be a whole number between {low} and {high}"))
    problems += limits.request_problems(
        {
            "entry_point": request.entry_point,
            "queue": request.queue,
            "caller": request.caller,
            "external_id": request.external_id,
            "callback_url": request.callback_url,
        }
    )
    if isinstance(request.callback_url, str) and not any(
        p.path == "callback_url" for p in problems
    ):
        why = callback_url_problem(request.callback_url)
        if why:
            problems.append(Problem("callback_url", why))
    if isinstance(request.attributes, dict):
        problems += limits.attribute_problems(request.attributes)
    else:
        problems.append(Problem("attributes", "must be an object of names and values"))
    return problems


def _effect_payload(c: cmd.Command) -> tuple[str, dict[str, Any]]:
    if isinstance(c, cmd.SendOffer):
        return "offer", {
            "offer_id": c.offer_id,
            "task_id": c.task_id,
            "expert_id": c.expert_id,
            "code": c.code,
            "expires_at": c.expires_at,
            "notice_only": c.notice_only,
        }
    if isinstance(c, cmd.WithdrawOffer):
        return "withdrawn", {
            "offer_id": c.offer_id,
            "task_id": c.task_id,
            "expert_id": c.expert_id,
            "code": c.code,
            "reason": c.reason,
        }
    if isinstance(c, cmd.ConfirmAccepted):
        return "accepted", {
            "offer_id": c.offer_id,
            "task_id": c.task_id,
            "expert_id": c.expert_id,
            "code": c.code,
        }
    assert isinstance(c, cmd.NotifyExpert)
    return "notice", {"expert_id": c.expert_id, "message": c.message}


def _offer_from_payload(p: dict[str, Any]) -> OfferView:
    """A minimal view when the core no longer knows the offer (effects resumed after restart)."""
    return OfferView(
        id=p["offer_id"],
        task_id=p["task_id"],
        code=p["code"],
        expert_id=p["expert_id"],
        status="withdrawn" if "reason" in p else "open",
        queue_id="",
        queue_name="",
        caller=None,
        created_at=0.0,
        expires_at=p.get("expires_at"),
        task_created_at=0.0,
        notice_only=bool(p.get("notice_only")),
    )


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    """A record's data as stored: a copy with sets and tuples as lists (JSON arrays)."""
    out = dict(data)
    for key, value in data.items():
        if isinstance(value, frozenset | set | tuple):
            out[key] = list(value)
    return out


def _view_json(view: TaskView) -> dict[str, Any]:
    body = {
        "id": view.id,
        "code": view.code,
        "status": view.status,
        "queue": view.queue,
        "expert": view.expert,
        "label": view.label,
        "created_at": view.created_at,
    }
    body.update({k: v for k, v in view.extra.items() if not k.startswith("_")})
    return body


def task_json(view: TaskView) -> dict[str, Any]:
    """The API body of a task (also the webhook payload's ``task``)."""
    return _view_json(view)


def _view_from_row(row: dict[str, Any]) -> TaskView:
    state = row.get("state") or {}
    created = store.as_utc(row["created_at"])
    return TaskView(
        id=row["task_id"],
        code=row["code"],
        status=row["status"],
        queue=row["queue_id"],
        expert=row.get("expert_id"),
        label=row.get("label"),
        created_at=store.iso(created) or "",
        extra={
            "channel": state.get("channel"),
            "caller": state.get("caller"),
            "priority": state.get("priority"),
            "external_id": row.get("external_id"),
            "dialed_number": state.get("dialed_number"),
            "call_disposition": (state.get("_meta") or {}).get("call_disposition"),
            "ended_at": store.iso(state.get("ended_at")),
            "origin": row.get("origin"),
            "callback_url": row.get("callback_url"),
        },
    )


def _empty_config() -> RoutingConfig:
    return RoutingConfig(version=0, experts={}, queues={}, matches={})


class StoreConfigSource:
    """Loads the stored configuration and builds the core's view of it.

    Keeps the eligibility index between versions, so a reload re-evaluates only the experts
    and queues that changed instead of every selection over every expert.
    """

    def __init__(self) -> None:
        self._index: Any = None

    def __call__(self, engine: Engine) -> tuple[RoutingConfig, Any]:
        from expertline.config.store import load_document

        version, doc = load_document(engine)
        if version == 0:
            return _empty_config(), doc
        from expertline.routing.build import build_routing_config
        from expertline.routing.eligibility import EligibilityIndex

        if self._index is None:
            self._index = EligibilityIndex.from_document(doc)
        return build_routing_config(doc, int(version), self._index), doc


def _default_version_probe(engine: Engine) -> int:
    from expertline.config.store import current_version

    return int(current_version(engine))


def create_runtime(ctx: Any) -> RuntimeService:
    """The node's factory: a runtime on the node's database, named after the node."""
    service = RuntimeService(ctx.engine, node=ctx.settings.node, health=ctx.services.health)
    if ctx.services.config_version is None:
        ctx.services.config_version = lambda: service.config.version
    return service
