"""``/admin/history``: every configuration version with its actor, the differences between any
two versions, and one-click reverts (``config.revert``), each a new version of its own."""

from __future__ import annotations

import difflib
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response

from expertline.config import revert, store
from expertline.config.yamlio import dump_yaml
from expertline.errors import InvalidInput
from expertline.web.app import AppContext
from expertline.web.pages import VIEWER_ROLES, PageRoute, changing, render, signed_in

PAGE = 50
SHOWN_CHANGES = 500


def router(ctx: AppContext) -> APIRouter:
    r = APIRouter(route_class=PageRoute, include_in_schema=False)
    engine = ctx.engine

    @r.get("/admin/history")
    def history(request: Request, before: int | None = None) -> Response:
        signed_in(request, VIEWER_ROLES)
        items = store.history(engine, limit=PAGE, before=before)
        older = items[-1].version if len(items) == PAGE and items[-1].version > 1 else None
        return render(
            request,
            "admin/history.html",
            items=items,
            older=older,
            current=store.current_version(engine),
            reverted=request.query_params.get("reverted"),
        )

    @r.get("/admin/history/diff")
    def diff(request: Request, a: int = 0, b: int = 0) -> Response:
        signed_in(request, VIEWER_ROLES)
        current = store.current_version(engine)
        b = b or current
        changes = revert.net_changes(engine, a, b, limit=SHOWN_CHANGES + 1)
        return render(
            request,
            "admin/diff.html",
            a=a,
            b=b,
            current=current,
            changes=[_shown(c) for c in changes[:SHOWN_CHANGES]],
            more=len(changes) > SHOWN_CHANGES,
            info=None,
        )

    @r.get("/admin/history/{version}")
    def version_page(request: Request, version: int) -> Response:
        signed_in(request, VIEWER_ROLES)
        found = store.history(engine, limit=1, before=version + 1)
        if not found or found[0].version != version:
            raise InvalidInput(f"no configuration version {version}")
        changes = revert.net_changes(engine, version - 1, version, limit=SHOWN_CHANGES + 1)
        return render(
            request,
            "admin/diff.html",
            a=version - 1,
            b=version,
            current=store.current_version(engine),
            changes=[_shown(c) for c in changes[:SHOWN_CHANGES]],
            more=len(changes) > SHOWN_CHANGES,
            info=found[0],
        )

    @r.post("/admin/history/{version}/undo")
    async def undo(request: Request, version: int) -> Response:
        session, _ = await changing(request)
        result = await run_in_threadpool(
            revert.undo_version, engine, version, session.principal.actor
        )
        return RedirectResponse(f"/admin/history?reverted={result.version}", status_code=303)

    @r.post("/admin/history/{version}/restore")
    async def restore(request: Request, version: int) -> Response:
        session, _ = await changing(request)
        result = await run_in_threadpool(
            revert.restore_version, engine, version, session.principal.actor
        )
        return RedirectResponse(f"/admin/history?reverted={result.version}", status_code=303)

    return r


def _shown(change: revert.NetChange) -> dict[str, Any]:
    before = dump_yaml(change.before).splitlines() if change.before else []
    after = dump_yaml(change.after).splitlines() if change.after else []
    lines = []
    for line in list(difflib.unified_diff(before, after, lineterm="", n=20))[2:]:
        if line.startswith("@@"):
            continue
        kind = "add" if line.startswith("+") else "del" if line.startswith("-") else ""
        lines.append((kind, line))
    return {
        "kind": change.kind.replace("_", " "),
        "object_id": change.object_id,
        "op": change.op,
        "lines": lines,
    }
