"""The task and expert operations of the runtime: what each request checks, which event it
puts through the routing core on the writer, and the committed view it answers with.

Each operation validates its input first (bad input changes nothing), checks what it can on
the committed views, then submits one step to the group-commit pipeline. On the writer the
step checks the *committed* status again (the core ignores an event that does not apply, so an
event accepted on the committed status but refused by the core gives no commands: a
``Conflict``). The caller is answered once the batch holding the step has committed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from sqlalchemy import Engine

from expertline import limits
from expertline.errors import Conflict, InvalidInput, NotFound, Problem
from expertline.instants import time_ordered_id
from expertline.routing import commands as cmd
from expertline.routing import events as ev
from expertline.routing.model import Presence, RoutingConfig
from expertline.routing.records import DELIVERY_FAILURES
from expertline.runtime import projection, store
from expertline.runtime.pipeline import Pipeline
from expertline.runtime.ports import AnswerResult, OfferView, TaskEventType, TaskRequest, TaskView
from expertline.runtime.requests import validate_request
from expertline.runtime.views import CommittedViews

# What a routing client may report, and in which committed statuses (built once, not per call).
TASK_EVENTS: dict[str, Callable[[str], ev.Event]] = {
    "connected": ev.CallConnected,
    "ended": ev.CallEnded,
    "abandoned": ev.TaskAbandoned,
    "failed": ev.TaskFailed,
}
TASK_EVENT_ALLOWED: dict[str, frozenset[str]] = {
    "connected": frozenset({"assigned"}),
    "ended": frozenset({"assigned", "connected"}),
    "abandoned": frozenset({"queued", "offered", "assigned"}),
    "failed": frozenset({"queued", "offered", "assigned", "connected"}),
}


class Host(Protocol):
    """What the operations need of the runtime (its parts of the current run)."""

    engine: Engine
    views: CommittedViews
    pipeline: Pipeline

    @property
    def config(self) -> RoutingConfig: ...

    def handle(self, event: ev.Event) -> list[cmd.Command]: ...

    def offer(self, offer_id: str) -> OfferView | None: ...


class Operations:
    """The bodies of the runtime's ``TaskPort`` and ``RoutingPort`` operations."""

    def __init__(self, host: Host) -> None:
        self.host = host

    # --- tasks ----------------------------------------------------------------------------

    async def async_create_task(self, request: TaskRequest) -> tuple[TaskView, bool]:
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
            views = self.host.views
            if request.external_id and request.external_id in views.by_external:
                return views.by_external[request.external_id], False
            queue_id = self._resolve_queue(request)
            views.meta[task_id] = {
                "origin": request.origin,
                "callback_url": request.callback_url,
                "external_id": request.external_id,
            }
            if request.external_id:
                views.by_external[request.external_id] = task_id
            self.host.handle(
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

        tid, created = await self.host.pipeline.async_submit(apply)
        view = self.host.views.task(tid)
        if view is None:  # pragma: no cover - the commit above made it visible
            raise NotFound(f"task {tid} vanished")
        return view, created

    async def _existing_by_external(self, external_id: str) -> TaskView | None:
        tid = self.host.views.by_external.get(external_id)
        if tid is not None:
            return self.host.views.task(tid)
        row = await store.async_read(store.task_by_external_id, self.host.engine, external_id)
        return projection.task_view_from_row(row) if row else None

    def _resolve_queue(self, request: TaskRequest) -> str:
        config = self.host.config
        if request.queue is not None:
            if request.queue not in config.queues:
                raise NotFound(f"unknown queue {request.queue!r}")
            return request.queue
        assert request.entry_point is not None
        queue_id = config.entry_points.get(request.entry_point)
        if queue_id is None:
            raise NotFound(f"unknown entry point {request.entry_point!r}")
        return queue_id

    async def async_task_event(
        self, task_id: str, type: TaskEventType, disposition: int | None, handed_off: bool
    ) -> TaskView:
        if type not in TASK_EVENTS:
            raise InvalidInput(
                f"unknown event type {type!r}; expected connected, ended, abandoned or failed"
            )
        allowed = TASK_EVENT_ALLOWED[type]
        event: ev.Event
        if type == "failed":
            event = ev.TaskFailed(task_id, disposition)
        elif type == "ended" and handed_off:
            event = ev.CallEnded(task_id, handed_off=True)
        else:
            event = TASK_EVENTS[type](task_id)

        def apply() -> None:
            status = self._committed_status(task_id)
            if status not in allowed:
                raise Conflict(
                    f"task {task_id} is {status}; {type!r} applies only when it is "
                    + " or ".join(sorted(allowed))
                )
            if not self.host.handle(event):
                raise Conflict(f"task {task_id} changed meanwhile; {type!r} no longer applies")

        if self.host.views.task(task_id) is None:
            ended = await self.async_task(task_id)
            if ended is None:
                raise NotFound(f"unknown task {task_id!r}")
            raise Conflict(f"task {task_id} is {ended.status}; it has ended")
        await self.host.pipeline.async_submit(apply)
        view = self.host.views.task(task_id) or await self.async_task(task_id)
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
            if not self.host.handle(ev.DeliveryFailed(task_id, disposition)):
                raise Conflict(f"task {task_id} changed meanwhile; the delivery failure is ignored")

        await self.host.pipeline.async_submit(apply)
        view = self.host.views.task(task_id)
        assert view is not None
        return view

    def _committed_status(self, task_id: str) -> str:
        """The task's committed status (writer only); NotFound when unknown."""
        view = self.host.views.task(task_id)
        if view is None:
            raise NotFound(f"unknown task {task_id!r}")
        return view.status

    # --- reads ----------------------------------------------------------------------------

    async def async_task(self, task_id: str) -> TaskView | None:
        """The committed view of a task, or of one ended long ago (database)."""
        view = self.host.views.task(task_id)
        if view is not None:
            return view
        if limits.text_problem(task_id, limits.TASK_ID):
            return None  # no task has such an id (and the database may refuse to look it up)
        row = await store.async_read(store.task_row, self.host.engine, task_id)
        return projection.task_view_from_row(row) if row else None

    async def async_wait_change(
        self, task_id: str, seen_status: str, timeout: float
    ) -> TaskView | None:
        view = self.host.views.task(task_id)
        if view is None or view.status != seen_status:
            return view or await self.async_task(task_id)
        await self.host.views.async_wait_change(task_id, seen_status, timeout)
        return await self.async_task(task_id)

    # --- experts --------------------------------------------------------------------------

    async def async_set_presence(self, expert_id: str, status: Presence, source: str) -> None:
        if status not in ("available", "away", "dnd", "offline"):
            raise InvalidInput(
                f"unknown presence {status!r}; expected available, away, dnd or offline"
            )
        if expert_id not in self.host.config.experts:
            raise NotFound(f"unknown expert {expert_id!r}")

        def apply() -> None:
            if expert_id not in self.host.config.experts:
                raise NotFound(f"unknown expert {expert_id!r}")
            self.host.handle(ev.PresenceChanged(expert_id, status, source))

        await self.host.pipeline.async_submit(apply)

    async def async_accept(self, offer_id: str, phone: str | None) -> AnswerResult:
        if phone is not None and (why := limits.text_problem(phone, limits.LABEL)):
            raise InvalidInput(f"invalid phone: {why}", [Problem("phone", why)])
        return await self._answer(offer_id, ev.OfferAccepted(offer_id, phone))

    async def async_decline(self, offer_id: str) -> AnswerResult:
        return await self._answer(offer_id, ev.OfferDeclined(offer_id))

    async def _answer(self, offer_id: str, event: ev.Event) -> AnswerResult:
        def apply() -> str | None:
            for c in self.host.handle(event):
                if isinstance(c, cmd.AnswerRefused) and c.offer_id == offer_id:
                    return c.reason
            return None

        reason = await self.host.pipeline.async_submit(apply)
        return AnswerResult(ok=reason is None, offer=self.host.offer(offer_id), reason=reason)
