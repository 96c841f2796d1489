"""HTTP surface of reporting: ``/api/v1/reports/*`` (JSON or CSV) and the ``/reports`` pages.

Both need role ``reporting``, ``supervisor`` or ``admin``. The API takes a bearer token; the
pages use the web sign-in (``expertline.web.signin``: a user or a token, kept as a session), and
``?token=`` on a page signs in with that token once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import (
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from jinja2 import Environment, PackageLoader, select_autoescape
from sqlalchemy import Engine

from expertline.db.engine import DatabaseError
from expertline.errors import ExpertlineError, InvalidInput, Problem
from expertline.instants import iso
from expertline.limits import TASK_ID, text_problem
from expertline.reporting import migrate
from expertline.reporting.core import QueueFigures, utc
from expertline.reporting.reports import (
    ReportRange,
    expert_report,
    parse_range,
    queue_figures,
    queue_report,
    task_detail,
    task_report,
    to_csv,
)
from expertline.reporting.service import reporting_engine
from expertline.reporting.web.charts import VolumePoint, utilization_chart, volume_chart
from expertline.security.tokens import TokenInfo
from expertline.web.app import AppContext
from expertline.web.auth import require
from expertline.web.pages import viewer, web_of
from expertline.web.refusals import ApiRouter
from expertline.web.sessions import Principal, Session
from expertline.web.signin import set_session_cookie

log = logging.getLogger(__name__)

READER_ROLES = ("reporting", "supervisor")  # and admin
PAGE_ROLES = frozenset({*READER_ROLES, "admin"})
TASK_PAGE_LIMIT = 500
CSV_PAGE = 5000

ReportName = Literal["queues", "experts", "tasks"]
Format = Literal["json", "csv"]

_templates = Environment(
    loader=PackageLoader("expertline.reporting", "web/templates"),
    autoescape=select_autoescape(["html"]),
)


def _short_time(value: str | None) -> str:
    """``2026-11-25T10:05:00.123Z`` as ``11-25 10:05:00`` (the whole value is the cell's
    title): the tables fit a 1280-pixel window."""
    if not value or len(value) < 19:
        return value or ""
    return f"{value[5:10]} {value[11:19]}"


_templates.filters["short_time"] = _short_time


def router(ctx: AppContext) -> APIRouter:
    r = ApiRouter(refusals=(401, 403, 422, 503))

    checked: set[int] = set()

    def engine() -> Engine:
        """The reporting database, once its schema is known to be current (else a 503 that
        says why, instead of SQL errors)."""
        eng = reporting_engine(ctx)
        if id(eng) not in checked:
            try:
                migrate.require_current(eng)
            except DatabaseError as exc:
                raise ExpertlineError(str(exc), [], "unavailable", 503) from exc
            checked.add(id(eng))
        return eng

    # --- REST --------------------------------------------------------------------------------

    @r.get(
        "/api/v1/reports/{name}",
        tags=["reporting"],
        summary="Queue, expert or task report (JSON, or CSV with format=csv)",
        response_model=None,
        responses={
            200: {
                "description": "`{items, next?}` as JSON, or CSV with the same columns",
                "content": {
                    "application/json": {"schema": {"type": "object"}},
                    "text/csv": {"schema": {"type": "string"}},
                },
            }
        },
    )
    def report(
        name: ReportName,
        start: Annotated[
            str | None, Query(alias="from", description="ISO 8601; default to - 24h")
        ] = None,
        end: Annotated[str | None, Query(alias="to", description="ISO 8601; default now")] = None,
        interval: Annotated[str | None, Query(description="15m | 30m | 60m (queues)")] = None,
        format: Annotated[Format, Query(description="json or csv")] = "json",
        limit: Annotated[int, Query(ge=1, le=10000, description="tasks per page (JSON)")] = 1000,
        after: Annotated[
            str | None, Query(description="tasks: `next` of the previous page")
        ] = None,
        _: TokenInfo = Depends(require(*READER_ROLES)),
    ) -> Any:
        rng = parse_range(start, end, interval)
        eng = engine()
        if format == "csv":
            return _csv_response(name, eng, rng)
        if name == "queues":
            return {"items": queue_report(eng, rng)}
        if name == "experts":
            return {"items": expert_report(eng, rng)}
        items, nxt = task_report(eng, rng, limit=limit, after=after)
        return {"items": items, "next": nxt}

    # --- pages -------------------------------------------------------------------------------

    @r.get("/reports", include_in_schema=False)
    def overview(request: Request) -> Response:
        session, gate = _gate(request)
        if gate is not None:
            return gate
        form, rng, problems = _range_from(request)
        eng = engine()
        queue_rows = queue_report(eng, rng) if rng else []
        expert_rows = expert_report(eng, rng) if rng else []
        chart = volume_chart(
            _volume_points(queue_figures(eng, rng)) if rng else [], "Queue volume and service level"
        )
        util = utilization_chart(
            [(r["expert_name"], r["utilization"]) for r in expert_rows], "Expert utilization"
        )
        return _page(
            "overview.html",
            session=session,
            form=form,
            problems=problems,
            queue_rows=queue_rows,
            expert_rows=expert_rows,
            volume_svg=chart,
            utilization_svg=util,
            query=_query(form),
        )

    @r.get("/reports/{name}.csv", include_in_schema=False)
    def csv_download(name: str, request: Request) -> Response:
        _, gate = _gate(request)
        if gate is not None:
            return gate
        if name not in ("queues", "experts", "tasks"):
            return PlainTextResponse("No such report.", status_code=404)
        _, rng, problems = _range_from(request)
        if rng is None:
            raise InvalidInput("invalid report request", problems)
        return _csv_response(name, engine(), rng)

    @r.get("/reports/tasks", include_in_schema=False)
    def tasks_page(request: Request) -> Response:
        session, gate = _gate(request)
        if gate is not None:
            return gate
        form, rng, problems = _range_from(request)
        items: list[dict[str, Any]] = []
        more = False
        if rng:
            items, nxt = task_report(engine(), rng, limit=TASK_PAGE_LIMIT)
            more = nxt is not None
        return _page(
            "tasks.html",
            session=session,
            form=form,
            problems=problems,
            items=items,
            more=more,
            limit=TASK_PAGE_LIMIT,
            query=_query(form),
        )

    @r.get("/reports/tasks/{task_id}", include_in_schema=False)
    def task_page(task_id: str, request: Request) -> Response:
        session, gate = _gate(request)
        if gate is not None:
            return gate
        task = task_detail(engine(), task_id) if not text_problem(task_id, TASK_ID) else None
        back = {k: v for k, v in request.query_params.items() if k in ("from", "to", "interval")}
        return _page(
            "task.html",
            status=200 if task is not None else 404,
            session=session,
            task=task,
            task_id=task_id,
            query=urlencode(back),
        )

    return r


# --- helpers ---------------------------------------------------------------------------------


def _csv_response(name: str, engine: Engine, rng: ReportRange) -> StreamingResponse:
    stamp = rng.start.strftime("%Y%m%dT%H%M")
    return StreamingResponse(
        to_csv(name, _all_rows(engine, name, rng)),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}-{stamp}.csv"'},
    )


def _all_rows(engine: Engine, name: str, rng: ReportRange) -> Iterator[dict[str, Any]]:
    if name == "queues":
        yield from queue_report(engine, rng)
    elif name == "experts":
        yield from expert_report(engine, rng)
    else:
        after = None
        while True:
            items, after = task_report(engine, rng, limit=CSV_PAGE, after=after)
            yield from items
            if after is None:
                return


def _page(template: str, status: int = 200, **values: Any) -> HTMLResponse:
    html = _templates.get_template(template).render(**values)
    return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})


def _gate(request: Request) -> tuple[Session | None, Response | None]:
    """(session, None) for a signed-in reader; else (None, a redirect): to the page itself
    once ``?token=`` signed in, or to the sign-in page."""
    query_token = request.query_params.get("token")
    if query_token is not None:
        rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
        target = request.url.path + ("?" + urlencode(rest) if rest else "")
        info = request.app.state.verify_token(query_token.strip())
        if info is not None and info.role in PAGE_ROLES:
            web = web_of(request.app.state.ctx)
            principal = Principal("token", info.id, info.name, info.role)
            key, session = web.sessions.create(principal)
            resp = RedirectResponse(target, status_code=303)
            set_session_cookie(request, resp, key, session)
            return None, resp
        return None, RedirectResponse("/sign-in?" + urlencode({"next": target}), status_code=303)
    signed = viewer(request)
    if signed is not None and signed.role in PAGE_ROLES:
        return signed, None
    target = request.url.path + ("?" + request.url.query if request.url.query else "")
    return None, RedirectResponse("/sign-in?" + urlencode({"next": target}), status_code=303)


def _range_from(request: Request) -> tuple[dict[str, str], ReportRange | None, list[Problem]]:
    p = request.query_params
    # The default range ends with the current minute (the next minute's start), so a task
    # that ended a moment ago is in it.
    now = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
    form = {"from": p.get("from", ""), "to": p.get("to", ""), "interval": p.get("interval", "15m")}
    try:
        rng = parse_range(form["from"] or None, form["to"] or None, form["interval"], now=now)
    except InvalidInput as exc:
        return form, None, exc.details
    form["from"] = form["from"] or _local(rng.start)
    form["to"] = form["to"] or _local(rng.end)
    return form, rng, []


def _local(at: datetime) -> str:
    """The value of an ``<input type=datetime-local>`` (UTC)."""
    return utc(at).strftime("%Y-%m-%dT%H:%M")


def _query(form: dict[str, str]) -> str:
    return urlencode({k: v for k, v in form.items() if v})


def _volume_points(figures: dict[tuple[datetime, str], QueueFigures]) -> list[VolumePoint]:
    """All queues added up per interval, for the volume chart."""
    per: dict[datetime, QueueFigures] = {}
    for (start, _), fig in figures.items():
        per.setdefault(start, QueueFigures("all")).merge(fig)
    points = []
    for start, f in sorted(per.items()):
        label = (iso(start) or "")[11:16]
        points.append(
            VolumePoint(
                label,
                f.handled,
                f.abandoned,
                f.overflowed + f.rejected,
                f.handled_within_sl / f.handled if f.handled else None,
            )
        )
    return points
