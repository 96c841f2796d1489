"""``/console``: an expert's page. Set presence, see offers with their countdown and the
attributes the queue shows, accept (optionally on another number) or decline, see the current
task and wrap-up.

The console is one more expert channel over the runtime's ``RoutingPort``, with the rules of the
others: the signed-in expert acts only for itself (``web.auth.act_for``, the rule of the REST
channel: another expert's offer is refused with 403), the first yes wins, a withdrawal shows
at once (``/console/live`` pushes the expert's picture whenever it changes), and an accepted
number must be one the expert or the queue allows (checked by the routing core).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, RedirectResponse, Response, StreamingResponse

from expertline.errors import Forbidden, NotFound, Unavailable
from expertline.routing.model import Presence
from expertline.runtime.ports import OfferView, RuntimePort
from expertline.security.tokens import TokenInfo
from expertline.web.app import AppContext
from expertline.web.auth import act_for
from expertline.web.pages import PageRoute, changing, render, signed_in, web_of
from expertline.web.sessions import Session

EXPERT_ROLES = frozenset({"expert"})
PRESENCE = tuple(Presence)
PRESENCE_LABELS = {
    Presence.AVAILABLE: "Available",
    Presence.AWAY: "Away",
    Presence.DND: "Do not disturb",
    Presence.OFFLINE: "Offline",
}
PUSH_GAP = 0.1  # seconds: the least time between two pictures of one console
RECHECK = 30.0
REFUSALS = {
    "closed": "This offer is no longer open: {status}. Nothing changed.",
    "capacity": "You have no free capacity for this task right now; the offer stays open.",
    "phone": "{phone} is not one of your numbers, nor one the queue allows; the offer is "
    "still open. Leave the number empty to take the call on your own phone.",
    "forbidden": "This offer went to another expert.",
}


def router(ctx: AppContext) -> APIRouter:
    r = APIRouter(route_class=PageRoute, include_in_schema=False)
    sessions = web_of(ctx).sessions

    def runtime() -> RuntimePort:
        service = ctx.services.runtime
        if service is None or not service.running:
            raise Unavailable(
                "Routing does not run on this node right now, so the console cannot work here."
            )
        return service

    @r.get("/console")
    async def console(request: Request) -> Response:
        session = await run_in_threadpool(signed_in, request, EXPERT_ROLES)
        expert_id = _expert_of(session)
        service = ctx.services.runtime
        picture = _picture(service, expert_id) if service is not None and service.running else None
        return render(
            request,
            "console.html",
            expert_id=expert_id,
            picture=picture,
            picture_json=json.dumps(picture).replace("<", "\\u003c"),
            presences=PRESENCE,
            labels=PRESENCE_LABELS,
            message=_message(request),
        )

    @r.get("/console/live")
    async def live(request: Request) -> Response:
        session = await run_in_threadpool(signed_in, request, EXPERT_ROLES)
        expert_id = _expert_of(session)
        service = runtime()

        async def stream() -> AsyncIterator[bytes]:
            yield b"retry: 2000\n\n"
            sent: str | None = None
            checked = time.monotonic()
            cursor = service.last_feed_id
            while service.running:
                picture = json.dumps(_picture(service, expert_id), separators=(",", ":"))
                if picture != sent:
                    sent = picture
                    yield f"event: console\ndata: {picture}\n\n".encode()
                if time.monotonic() - checked > RECHECK:
                    checked = time.monotonic()
                    if not await run_in_threadpool(sessions.still_live, session):
                        yield b"event: signed-out\ndata: {}\n\n"
                        return
                before = cursor
                cursor = await service.async_wait_feed(cursor, 15.0)
                if cursor <= before:
                    yield b": keep-alive\n\n"
                await asyncio.sleep(PUSH_GAP)
            yield b"event: stopped\ndata: {}\n\n"

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @r.post("/console/presence")
    async def presence(request: Request) -> Response:
        session, form = await changing(request, EXPERT_ROLES)
        expert_id = _expert_of(session)
        given = str(form.get("status") or "")
        if given not in PRESENCE:
            return _answer(request, 422, f"Unknown presence {given!r}.")
        status = Presence(given)
        act_for(_as_token(session), expert_id)
        await runtime().async_set_presence(expert_id, status, "web")
        return _answer(request, 200, f"You are now {PRESENCE_LABELS[status].lower()}.")

    @r.post("/console/offers/{offer_id}/{verb}")
    async def answer(request: Request, offer_id: str, verb: str) -> Response:
        session, form = await changing(request, EXPERT_ROLES)
        if verb not in ("accept", "decline"):
            raise NotFound(f"no such answer: {verb!r}")
        service = runtime()
        offer: OfferView | None = service.offer(offer_id)
        if offer is None:
            raise NotFound("There is no such offer.")
        act_for(_as_token(session), offer.expert_id)  # another expert's offer: 403
        phone = str(form.get("phone") or "").strip() or None
        if verb == "accept":
            if phone is not None and (len(phone) > 255 or any(c.isspace() for c in phone)):
                return _answer(
                    request, 422, "A phone number has no spaces (at most 255 characters)."
                )
            result = await service.async_accept(offer_id, phone)
        else:
            result = await service.async_decline(offer_id)
        if not result.ok:
            status = result.offer.status if result.offer else "gone"
            text = REFUSALS.get(str(result.reason), "Nothing changed.").format(
                status=status, phone=phone
            )
            return _answer(request, 422 if result.reason == "phone" else 409, text)
        done = "Accepted" if verb == "accept" else "Declined"
        return _answer(request, 200, f"{done} #{offer.code}.")

    return r


def _expert_of(session: Session) -> str:
    expert_id = session.principal.expert_id
    if not expert_id:
        raise Forbidden("This sign-in is bound to no expert.")
    return expert_id


def _as_token(session: Session) -> TokenInfo:
    """The session as the token the identity rule reads (role and bound expert)."""
    p = session.principal
    return TokenInfo(p.id, p.name, p.role, session.created_at, None, p.expert_id)


def _answer(request: Request, status: int, text: str) -> Response:
    """JSON for the page's script; for a plain form, back to the console with the message."""
    if "application/json" in request.headers.get("accept", ""):
        return JSONResponse({"ok": status == 200, "message": text}, status_code=status)
    kind = "ok" if status == 200 else "problem"
    return RedirectResponse(f"/console?{kind}={_quote(text)}", status_code=303)


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text[:300])


def _message(request: Request) -> dict[str, str] | None:
    for kind in ("ok", "problem"):
        text = request.query_params.get(kind)
        if text:
            return {"kind": kind, "text": text[:300]}
    return None


def _picture(service: RuntimePort, expert_id: str) -> dict[str, Any] | None:
    """What the console shows, as JSON-ready data (None: no such expert here)."""
    state = service.expert_state(expert_id)
    if state is None:
        return None
    offers = [
        {
            "id": o.id,
            "code": o.code,
            "queue": o.queue_name,
            "caller": o.caller,
            "created_at": o.created_at,
            "expires_at": o.expires_at,
            "waiting_since": o.task_created_at,
            "notice_only": o.notice_only,
            "attributes": o.shown_attributes,
        }
        for o in service.open_offers(expert_id)
    ]
    tasks = []
    for task_id in state.get("active_tasks") or []:
        view = service.task(task_id)
        if view is None:
            continue
        tasks.append(
            {
                "id": view.id,
                "code": view.code,
                "status": view.status,
                "queue": view.queue,
                "label": view.label,
                "since": view.created_at,
            }
        )
    wrap_up = state.get("wrap_up_until")
    return {
        "now": time.time(),
        "expert": {"id": expert_id, "name": state.get("name")},
        "presence": state.get("presence"),
        "state": state.get("state"),
        "offers": offers,
        "tasks": tasks,
        "wrap_up_until": _epoch(wrap_up),
    }


def _epoch(value: Any) -> float | None:
    if not value:
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).astimezone(UTC).timestamp()
    except ValueError:
        return None
