"""``/admin``: the live dashboard, and ``/admin/live``, the Server-Sent Events it listens to.

The page is rendered with the board's current picture (readable without scripts); the script
then follows ``/admin/live`` and redraws at most four times a second, however fast events come.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse

from expertline.web.admin.live import BUCKETS, board_of
from expertline.web.app import AppContext
from expertline.web.pages import VIEWER_ROLES, PageRoute, render, signed_in, web_of

RECHECK = 30.0  # seconds between two checks that the session of a stream still holds
LABELS = {
    "available": "Available",
    "offered": "Offered",
    "busy": "Busy",
    "wrap_up": "Wrap-up",
    "away": "Away",
    "offline": "Offline",
}


def router(ctx: AppContext) -> APIRouter:
    r = APIRouter(route_class=PageRoute, include_in_schema=False)
    board = board_of(ctx)
    sessions = web_of(ctx).sessions

    @r.get("/admin")
    async def dashboard(request: Request) -> Response:
        await run_in_threadpool(signed_in, request, VIEWER_ROLES)
        picture = board.last
        if picture is None or time.time() - picture["at"] > 5:
            await run_in_threadpool(board.refresh)
            picture = await run_in_threadpool(board.picture)
        return render(
            request,
            "admin/dashboard.html",
            picture=picture,
            buckets=BUCKETS,
            labels=LABELS,
            picture_json=json.dumps(picture).replace("<", "\\u003c"),
        )

    @r.get("/admin/live")
    async def live(request: Request) -> Response:
        session = await run_in_threadpool(signed_in, request, VIEWER_ROLES)
        updates = board.subscribe()

        async def stream() -> AsyncIterator[bytes]:
            checked = time.monotonic()
            try:
                yield b"retry: 2000\n\n"
                while True:
                    try:
                        picture = await asyncio.wait_for(updates.get(), timeout=15)
                    except TimeoutError:
                        yield b": keep-alive\n\n"
                        picture = None
                    if time.monotonic() - checked > RECHECK:
                        checked = time.monotonic()
                        if not await run_in_threadpool(sessions.still_live, session):
                            yield b"event: signed-out\ndata: {}\n\n"
                            return
                    if picture is not None:
                        data = json.dumps(picture, separators=(",", ":"))
                        yield f"event: board\ndata: {data}\n\n".encode()
            finally:
                board.unsubscribe(updates)

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    return r
