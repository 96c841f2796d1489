"""The routing-client and presence/offer REST API (SPEC §5.2).

Routing clients create tasks, follow them (long-poll), report call progress and read the
RCD/TCD and event feeds. Experts set presence and answer offers: an ``expert`` token acts for
the one expert it is bound to (``web.auth.act_for``), an ``admin`` token for anyone.
``supervisor`` tokens read live state and change nothing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    WithJsonSchema,
    field_validator,
)

from expertline import limits
from expertline.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    Problem,
    Unavailable,
)
from expertline.instants import instants_as_text, iso
from expertline.records.feed import EVENT_TYPES, unknown_event_types
from expertline.routing.model import Presence
from expertline.runtime import store
from expertline.runtime.ports import OfferView, RuntimePort, TaskRequest
from expertline.runtime.projection import WAITING_STATUSES, task_json
from expertline.runtime.webhooks import callback_url_problem
from expertline.security.tokens import TokenInfo
from expertline.visibility import show_caller
from expertline.web.app import AppContext
from expertline.web.auth import act_for, require_on_loop
from expertline.web.refusals import ApiRouter

ROUTING_CLIENT_ROLES = ("routing-client",)
EXPERT_ROLES = ("expert",)
STATE_READER_ROLES = ("routing-client", "expert", "reporting", "supervisor")
FEED_READER = require_on_loop("routing-client", "reporting")
EXPERT = require_on_loop(*EXPERT_ROLES)
STATE_READER = require_on_loop(*STATE_READER_ROLES)

PREFIX = "/api/v1"
MAX_LIMIT = 1000


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _within(limit: limits.TextLimit) -> Any:
    """The length bounds of a text field with ``limit`` (``expertline.limits``, the table the
    database columns use too)."""
    return Field(min_length=limit.min_chars or None, max_length=limit.max_chars)


def _storable(limit: limits.TextLimit) -> AfterValidator:
    """No control character or lone surrogate: values the database would refuse."""

    def check(value: str) -> str:
        if limits.fits(value, limit):
            return value
        raise ValueError(limits.text_problem(value, limit) or "invalid text")

    return AfterValidator(check)


def _attribute_value(value: Any) -> Any:
    why = limits.attribute_value_problem(value)
    if why:
        raise ValueError(why)
    return value


EntryPoint = Annotated[str, _within(limits.DIALED_NUMBER), _storable(limits.DIALED_NUMBER)]
QueueId = Annotated[str, _within(limits.ID), _storable(limits.ID)]
Caller = Annotated[str, _within(limits.CALLER), _storable(limits.CALLER)]
ExternalId = Annotated[str, _within(limits.EXTERNAL_ID), _storable(limits.EXTERNAL_ID)]
CallbackUrl = Annotated[str, _within(limits.URL), _storable(limits.URL)]
Phone = Annotated[str, _within(limits.LABEL), _storable(limits.LABEL)]
AttributeName = Annotated[str, _within(limits.ATTRIBUTE_NAME), _storable(limits.ATTRIBUTE_NAME)]
AttributeValue = Annotated[
    Any,
    PlainValidator(_attribute_value),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "maxLength": limits.ATTRIBUTE_VALUE.max_chars},
                {"type": "number"},
                {"type": "boolean"},
                {
                    "type": "array",
                    "items": {"type": "string", "maxLength": limits.ATTRIBUTE_VALUE.max_chars},
                    "maxItems": limits.MAX_LIST_ITEMS,
                },
            ],
            "description": "Text, a finite number (not NaN or Infinity), a boolean or a list "
            "of text.",
        }
    ),
]


class TaskCreate(_Body):
    entry_point: EntryPoint | None = Field(default=None, description="Dialed number / route key.")
    queue: QueueId | None = None
    caller: Caller | None = None
    channel: Literal["voice", "chat"] = "voice"
    attributes: dict[AttributeName, AttributeValue] = Field(
        default_factory=dict, max_length=limits.MAX_ATTRIBUTES
    )
    priority: int | None = Field(default=None, ge=limits.PRIORITY[0], le=limits.PRIORITY[1])
    external_id: ExternalId | None = Field(
        default=None,
        description="The routing client's id: the same value again returns the same task.",
    )
    callback_url: CallbackUrl | None = Field(
        default=None,
        description="An absolute http(s) URL that receives a POST at every status change "
        "(retried until a 2xx answer).",
        json_schema_extra={"format": "uri"},
    )

    @field_validator("callback_url")
    @classmethod
    def _deliverable(cls, url: str | None) -> str | None:
        problem = None if url is None else callback_url_problem(url)
        if problem:
            raise ValueError(f"the callback URL {problem}")
        return url


class TaskPoll(BaseModel):
    """The query of ``GET /tasks/{id}``."""

    wait: float = Field(default=0, ge=0, le=60, description="Long-poll seconds")
    status: str | None = Field(
        default=None,
        description="Long-poll while the task still has this status (default: current)",
    )


class TaskEvent(_Body):
    type: Literal["connected", "ended", "abandoned", "failed"]
    disposition: int | None = Field(default=None, ge=0, le=999)


class PresenceBody(_Body):
    status: Presence


class AcceptBody(_Body):
    phone: Phone | None = Field(
        default=None,
        pattern=r"^\S+$",
        description="Take the call on this number instead of the configured phone.",
    )


def router(ctx: AppContext) -> APIRouter:
    """The API's routes. Task creation, task events and offer answers are also served hot
    (``expertline.web.hot``): their handlers below are shared by both ways in."""
    r = ApiRouter(prefix=PREFIX, refusals=(401, 403, 404, 409, 413, 422, 503))
    hot = ctx.hot_routes

    def runtime() -> RuntimePort:
        service = ctx.services.runtime
        if service is None or not service.running:
            lease = ctx.services.lease
            if lease is not None and not lease.active:
                raise Unavailable(
                    f"node {ctx.settings.node} is the standby of an HA pair: "
                    "send routing requests to the active node"
                )
            raise Unavailable("the routing runtime is not running on this node")
        return service

    # --- tasks ---------------------------------------------------------------------------

    async def create(body: TaskCreate) -> tuple[int, dict[str, Any]]:
        if (body.entry_point is None) == (body.queue is None):
            raise InvalidInput("give exactly one of entry_point or queue")
        service = runtime()
        view, created = await service.async_create_task_ex(
            TaskRequest(
                entry_point=body.entry_point,
                queue=body.queue,
                caller=body.caller,
                channel=body.channel,
                attributes=dict(body.attributes),
                priority=body.priority,
                external_id=body.external_id,
                callback_url=body.callback_url,
                origin="http",
            )
        )
        return (201 if created else 200), task_json(view)

    hot.declare(
        r,
        "POST",
        "/tasks",
        create,
        roles=ROUTING_CLIENT_ROLES,
        body=TaskCreate,
        name="create_task",
        tags=["routing client"],
        summary="Create a task (route request)",
        status_code=201,
        responses={
            200: {"description": "The task with this external_id already existed"},
            404: {"description": "Unknown entry point or queue"},
            422: {"description": "Invalid request"},
        },
    )

    async def poll(query: TaskPoll, task_id: str, token: TokenInfo) -> tuple[int, dict[str, Any]]:
        service = runtime()
        view = await service.async_task(task_id)
        if view is None:
            raise NotFound(f"unknown task {task_id!r}")
        seen = query.status or view.status
        if query.wait > 0 and view.status == seen and view.status in WAITING_STATUSES:
            view = await service.async_wait_change(task_id, seen, query.wait) or view
        body = task_json(view)
        if token.role == "expert":  # an expert sees the caller as the queue's offers show it
            body["caller"] = show_caller(body.get("caller"), service.show_rules(view.queue))
        return 200, body

    hot.declare(
        r,
        "GET",
        "/tasks/{task_id}",
        poll,
        roles=STATE_READER_ROLES,
        query=TaskPoll,
        with_token=True,
        name="get_task",
        tags=["routing client"],
        summary="A task; long-polls with ?wait=S",
    )

    async def report(body: TaskEvent, task_id: str) -> tuple[int, dict[str, Any]]:
        if body.disposition is not None and body.type != "failed":
            raise InvalidInput("disposition applies only to type 'failed'")
        view = await runtime().async_task_event(task_id, body.type, body.disposition)
        return 200, task_json(view)

    hot.declare(
        r,
        "POST",
        "/tasks/{task_id}/events",
        report,
        roles=ROUTING_CLIENT_ROLES,
        body=TaskEvent,
        name="task_event",
        tags=["routing client"],
        summary="Report call progress: connected, ended, abandoned, failed",
        responses={404: {"description": "Unknown task"}, 409: {"description": "Not applicable"}},
    )

    # --- feeds ---------------------------------------------------------------------------

    @r.get(
        "/records/{kind}",
        tags=["records"],
        summary="RCD or TCD records in commit order, resumable by cursor",
    )
    async def records(
        kind: Literal["rcd", "tcd"],
        after: Annotated[str | None, Query(description="Cursor from a previous `next`")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
        _: Any = Depends(FEED_READER),
    ) -> dict[str, Any]:
        cursor = _cursor(after)
        rows = await store.async_read(store.read_records, ctx.engine, kind, cursor, limit)
        items = [_record_json(row) for row in rows]
        last = rows[-1]["recovery_key"] if rows else cursor
        return {"items": items, "next": str(last)}

    @r.get("/events", tags=["events"], summary="Every transition in commit order, by cursor")
    async def events(
        after: Annotated[str | None, Query(description="Cursor from a previous `next`")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
        type: Annotated[list[str] | None, Query(description="Only these event types")] = None,
        task_id: Annotated[str | None, Query(description="Only this task's events")] = None,
        _: Any = Depends(FEED_READER),
    ) -> dict[str, Any]:
        _check_types(type)
        cursor = _cursor(after)
        rows = await store.async_read(store.read_feed, ctx.engine, cursor, limit, type, task_id)
        last = rows[-1]["id"] if rows else cursor
        return {"items": [_event_json(row) for row in rows], "next": str(last)}

    @r.get(
        "/events/stream",
        tags=["events"],
        summary="Live events as Server-Sent Events (resume with Last-Event-ID or ?after=)",
        response_class=StreamingResponse,
    )
    async def event_stream(
        request: Request,
        after: Annotated[str | None, Query()] = None,
        type: Annotated[list[str] | None, Query()] = None,
        _: Any = Depends(FEED_READER),
    ) -> StreamingResponse:
        _check_types(type)
        cursor = _cursor(after or request.headers.get("last-event-id"))

        async def stream() -> AsyncIterator[bytes]:
            nonlocal cursor
            yield b"retry: 2000\n\n"
            while not await request.is_disconnected():
                rows = await asyncio.to_thread(store.read_feed, ctx.engine, cursor, 500, type, None)
                for row in rows:
                    cursor = row["id"]
                    payload = json.dumps(_event_json(row), separators=(",", ":"))
                    yield f"id: {row['id']}\nevent: {row['type']}\ndata: {payload}\n\n".encode()
                if rows:
                    continue
                service = ctx.services.runtime
                if service is not None and service.running:
                    before = cursor
                    await service.async_wait_feed(cursor, 15.0)
                    if service.last_feed_id <= before:
                        yield b": keep-alive\n\n"
                else:
                    await asyncio.sleep(1.0)
                    yield b": keep-alive\n\n"

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    # --- presence and offers ---------------------------------------------------------------

    @r.put(
        "/experts/{expert_id}/presence",
        tags=["experts"],
        summary="Set an expert's presence (the REST presence channel)",
    )
    async def set_presence(
        expert_id: str, body: PresenceBody, token: TokenInfo = Depends(EXPERT)
    ) -> dict[str, Any]:
        act_for(token, expert_id)
        service = runtime()
        await service.async_set_presence(expert_id, body.status, "rest")
        state = service.expert_state(expert_id)
        if state is None:
            raise NotFound(f"unknown expert {expert_id!r}")
        return state

    @r.get("/experts/{expert_id}/state", tags=["experts"], summary="An expert's live state")
    async def expert_state(expert_id: str, _: Any = Depends(STATE_READER)) -> dict[str, Any]:
        state = runtime().expert_state(expert_id)
        if state is None:
            raise NotFound(f"unknown expert {expert_id!r}")
        return state

    @r.get("/queues/{queue_id}/state", tags=["queues"], summary="A queue's live state")
    async def queue_state(queue_id: str, _: Any = Depends(STATE_READER)) -> dict[str, Any]:
        state = runtime().queue_state(queue_id)
        if state is None:
            raise NotFound(f"unknown queue {queue_id!r}")
        return state

    @r.get("/offers", tags=["experts"], summary="An expert's offers (open by default)")
    async def offers(
        expert: Annotated[str, Query(min_length=1, description="Expert id")],
        status: Annotated[
            Literal["open", "accepted", "declined", "timeout", "withdrawn", "all"], Query()
        ] = "open",
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
        token: TokenInfo = Depends(EXPERT),
    ) -> dict[str, Any]:
        act_for(token, expert)
        service = runtime()
        if service.expert(expert) is None:
            raise NotFound(f"unknown expert {expert!r}")
        if status == "open":
            return {"items": [_offer_json(o) for o in service.open_offers(expert)[:limit]]}
        rows = await store.async_read(
            store.offers_of_expert, ctx.engine, expert, None if status == "all" else status, limit
        )
        return {"items": [_offer_row_json(service, row) for row in rows]}

    def answering(token: TokenInfo, offer_id: str) -> Any:
        """The runtime, once ``token`` may answer this offer (its expert's, or admin)."""
        service = runtime()
        if token.role != "admin":
            offer = service.offer(offer_id)
            if offer is None:
                raise NotFound(f"unknown offer {offer_id!r}")
            act_for(token, offer.expert_id)
        return service

    async def answer_accept(
        body: AcceptBody | None, offer_id: str, token: TokenInfo
    ) -> tuple[int, dict[str, Any]]:
        service = answering(token, offer_id)
        phone = body.phone if body else None
        result = await service.async_accept(offer_id, phone)
        return 200, _answer_json(offer_id, result, phone)

    async def answer_decline(
        _: None, offer_id: str, token: TokenInfo
    ) -> tuple[int, dict[str, Any]]:
        result = await answering(token, offer_id).async_decline(offer_id)
        return 200, _answer_json(offer_id, result)

    answered = {
        403: {"description": "The offer went to another expert than the token's"},
        404: {"description": "Unknown offer"},
        409: {"description": "Not open"},
        422: {"description": "Invalid body, or a phone the expert may not ask for"},
    }
    hot.declare(
        r,
        "POST",
        "/offers/{offer_id}/accept",
        answer_accept,
        roles=EXPERT_ROLES,
        body=AcceptBody,
        body_required=False,
        with_token=True,
        name="accept",
        tags=["experts"],
        summary="Accept an offer (first accept wins)",
        responses=answered,
    )
    hot.declare(
        r,
        "POST",
        "/offers/{offer_id}/decline",
        answer_decline,
        roles=EXPERT_ROLES,
        with_token=True,
        name="decline",
        tags=["experts"],
        summary="Decline an offer",
        responses=answered,
    )

    return r


def _cursor(after: str | None) -> int:
    if after is None or after == "":
        return 0
    # isdigit() alone admits other scripts' digits ("²", "٣"), which int() then refuses
    if not (after.isascii() and after.isdigit()) or len(after) > 18:
        shown = repr(after) if len(after) <= 40 else f"{after[:40]!r}…"
        raise InvalidInput(f"bad cursor {shown}: use the `next` value of a previous page")
    return int(after)


def _when(value: Any) -> Any:
    return iso(value) if isinstance(value, datetime) else value


def _record_json(row: dict[str, Any]) -> dict[str, Any]:
    return store.record_json(row)


def _check_types(types: list[str] | None) -> None:
    """Refuse an event type filter naming a type the feed never holds (it would match nothing)."""
    unknown = unknown_event_types(types)
    if unknown:
        valid = ", ".join(t.name for t in EVENT_TYPES)
        names = ", ".join(repr(n) for n in unknown)
        raise InvalidInput(
            f"unknown event type {names}: the types are {valid}",
            [Problem("type", f"unknown event type {n!r}") for n in unknown],
        )


def _event_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "type": row["type"],
        "task_id": row["task_id"],
        "expert_id": row["expert_id"],
        "at": _when(row["created_at"]),
        "data": instants_as_text(row["data"]) if row["data"] else row["data"],
    }


def _offer_json(o: OfferView) -> dict[str, Any]:
    return {
        "id": o.id,
        "task_id": o.task_id,
        "code": o.code,
        "expert": o.expert_id,
        "status": o.status,
        "queue": o.queue_id,
        "queue_name": o.queue_name,
        "caller": o.caller,
        "created_at": iso(o.created_at),
        "expires_at": iso(o.expires_at),
        "task_created_at": iso(o.task_created_at),
        "notice_only": o.notice_only,
        "attributes": o.shown_attributes,
    }


def _offer_row_json(service: Any, row: dict[str, Any]) -> dict[str, Any]:
    view = service.offer(row["offer_id"])
    if view is not None:
        return _offer_json(view)
    s = row.get("state") or {}
    return {
        "id": row["offer_id"],
        "task_id": row["task_id"],
        "code": s.get("code"),
        "expert": row["expert_id"],
        "status": row["status"],
        "queue": s.get("queue_id"),
        "created_at": iso(s.get("created_at")),
        "expires_at": iso(s.get("expires_at")),
        "ended_at": iso(s.get("ended_at")),
        "notice_only": bool(s.get("notice_only")),
    }


def _answer_json(offer_id: str, result: Any, phone: str | None = None) -> dict[str, Any]:
    if not result.ok:
        if result.reason == "unknown" or result.offer is None:
            raise NotFound(f"unknown offer {offer_id!r}")
        if result.reason == "phone":
            raise InvalidInput(
                f"offer {offer_id} cannot be taken on {phone!r}: it is not one of expert "
                f"{result.offer.expert_id!r}'s numbers (phone, phones) and the queue's "
                "accept_phones does not allow it; the offer is still open",
                [Problem("phone", "not one of the expert's numbers nor allowed by the queue")],
            )
        if result.reason == "capacity":
            raise Conflict(f"offer {offer_id} cannot be accepted: the expert has no free capacity")
        raise Conflict(f"offer {offer_id} is {result.offer.status}; it can no longer be answered")
    assert result.offer is not None
    return _offer_json(result.offer)
