"""The HTTP application: one FastAPI app; each part of the product contributes routers.

Parts register themselves in ``ROUTER_FACTORIES`` order; each factory gets the ``AppContext``
and returns an ``APIRouter`` (or None when its role is not running on this node). A factory may
also serve some of its routes hot (``ctx.hot_routes``, see ``expertline.web.hot``): those
requests are answered before FastAPI's per-request machinery when they are fit to succeed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import Engine
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path
from starlette.types import Message, Receive, Scope, Send

from expertline import __version__
from expertline.errors import ExpertlineError, InvalidInput, Problem, TooLarge, Unavailable
from expertline.health import Health
from expertline.settings import Settings
from expertline.web.auth import TokenVerifier
from expertline.web.bodies import decode_json, is_json, not_json_problem
from expertline.web.hot import NO_JSON, HotRoutes, read_body, replay_body

if TYPE_CHECKING:  # the services import this module: their types only, for the annotations
    from expertline.feeds.delivery import RecordFeeds
    from expertline.ha.keeper import LeaseKeeper
    from expertline.node import Node
    from expertline.presence.redundant import RedundantSource
    from expertline.presence.xmpp import XmppSource
    from expertline.reporting.service import ReportingService
    from expertline.runtime.ports import RuntimePort
    from expertline.sip.front import SipFront
    from expertline.web.admin.live import LiveBoard
    from expertline.web.pages import Web


@dataclass
class Services:
    """The services of this node that routers and pages use; each is None where the node's
    role does not run it (``node.py`` creates them)."""

    health: Health = field(default_factory=Health)
    node: Node | None = None
    runtime: RuntimePort | None = None
    lease: LeaseKeeper | None = None  # HA (PostgreSQL): the runtime runs while it holds the lease
    reporting: ReportingService | None = None
    reporting_engine: Engine | None = None  # a separate reporting database, opened on first use
    sip: SipFront | None = None
    presence_sources: list[XmppSource | RedundantSource] = field(default_factory=list)
    record_feeds: RecordFeeds | None = None  # RCD/TCD pushed to webhook targets
    config_version: Callable[[], int] | None = None  # the applied configuration's version
    web: Web | None = None  # the pages' shared state, made on first use
    live_board: LiveBoard | None = None  # the live dashboard's state, made on first use


@dataclass
class AppContext:
    """What routers need: settings, the database, and the services running on this node."""

    settings: Settings
    engine: Engine
    services: Services = field(default_factory=Services)
    hot_routes: HotRoutes = field(default_factory=HotRoutes)


RouterFactory = Callable[[AppContext], Any]


MAX_BODY = 1 << 20  # bytes of a request body: tasks, presence, offers, tokens, queries
MAX_CONFIG_BODY = 64 << 20  # a whole configuration document (100,000 experts fit)
CONFIG_PREFIX = "/api/v1/config"


CONFIG_UPLOAD = "/admin/config/import"  # the admin page's YAML import (session checked first)


def body_limit(path: str) -> int:
    return MAX_CONFIG_BODY if path.startswith((CONFIG_PREFIX, CONFIG_UPLOAD)) else MAX_BODY


class ExpertlineAPI(FastAPI):
    """FastAPI that reads each request body first (refusing one over its limit with 413, or
    one announced as JSON that is not strict JSON with 422, before anything is done) and
    offers the request to the hot routes.

    Whole configuration documents (``/api/v1/config*``, up to 64 MiB) are the exception: their
    endpoints check the token first and only then read the body, through a receive channel
    that refuses it (413) as soon as it crosses the limit, so a caller without an admin token
    never has a large body buffered.
    """

    hot_routes: HotRoutes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        limit = body_limit(scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await problem_response(TooLarge(limit))(scope, receive, send)
            return
        if limit == MAX_CONFIG_BODY:
            await super().__call__(scope, limited_receive(receive, limit), send)
            return
        try:
            body = await read_body(receive, limit)
        except TooLarge as exc:
            await problem_response(exc)(scope, receive, send)
            return
        if body is None:  # the client went away before sending its body
            return
        data: Any = NO_JSON
        if body and is_json(_header(scope, b"content-type")):
            try:
                data = decode_json(body)
            except InvalidInput as exc:
                await problem_response(exc)(scope, receive, send)
                return
        receive = replay_body(body, receive)
        if not scope.get("root_path") and not self.root_path:
            hit = self.hot_routes.match(scope["method"], scope["path"])
            if hit is not None:
                await self.hot_routes.serve(
                    *hit,
                    scope,
                    body,
                    data,
                    receive,
                    send,
                    verifier=self.state.verify_token,
                    fallback=super().__call__,
                    problem=problem_response,
                )
                return
        await super().__call__(scope, receive, send)


def limited_receive(receive: Receive, limit: int) -> Receive:
    """``receive`` that raises TooLarge once the body it has handed over crosses ``limit``."""
    size = 0

    async def limited() -> Message:
        nonlocal size
        message = await receive()
        if message["type"] == "http.request":
            size += len(message.get("body", b""))
            if size > limit:
                raise TooLarge(limit)
        return message

    return limited


def _header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of header ``name`` (as Starlette's ``Headers.get``)."""
    for key, value in scope.get("headers") or ():
        if key == name:
            return bytes(value)
    return None


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers") or ():
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses such a request before it gets here
    return None


def create_app(ctx: AppContext, factories: list[RouterFactory] | None = None) -> FastAPI:
    app = ExpertlineAPI(
        title="expertline",
        version=__version__,
        description="Routes contact-center work to enterprise experts by IM presence.",
        openapi_url="/openapi.json",
    )
    app.state.ctx = ctx
    app.hot_routes = ctx.hot_routes
    app.state.verify_token = TokenVerifier(ctx.engine)
    _install_error_handlers(app)
    if factories is None:
        from expertline.web.routers import default_factories

        factories = default_factories()
    routes = list(app.router.routes)
    for factory in factories:
        router = factory(ctx)
        if router is not None:
            app.include_router(router)
            routes.extend(router.routes)
    app.state.route_methods = _route_methods(routes)
    return app


def error_response(
    status: int, code: str, message: str, details: list[Problem] | None = None
) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    if details:
        body["details"] = [d.as_dict() for d in details]
    return JSONResponse({"error": body}, status_code=status)


def problem_response(exc: ExpertlineError) -> JSONResponse:
    """The answer to a refusal, wherever in the application it was raised."""
    resp = error_response(exc.http_status, exc.code, exc.message, exc.details)
    if exc.http_status == 401:
        resp.headers.update({"WWW-Authenticate": "Bearer"})
    elif isinstance(exc, Unavailable) and exc.retry_after is not None:
        resp.headers.update({"Retry-After": str(exc.retry_after)})
    return resp


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ExpertlineError)
    async def _expertline(_: Request, exc: ExpertlineError) -> JSONResponse:
        return problem_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(_unread_body(err) for err in errors):
            return problem_response(not_json_problem(request.headers.get("content-type")))
        problems = [
            Problem(
                ".".join(str(p) for p in err.get("loc", ()) if p != "body"),
                err.get("msg", "invalid"),
            )
            for err in errors
        ]
        summary = "; ".join(str(p) for p in problems[:3])
        return error_response(422, "invalid", f"invalid request: {summary}", problems)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        resp = error_response(exc.status_code, code, str(exc.detail))
        resp.headers.update(exc.headers or {})
        if exc.status_code == 405:
            resp.headers["Allow"] = ", ".join(allowed_methods(request.app, request.url.path))
        return resp


def _unread_body(err: Any) -> bool:
    """A body model given the raw bytes: FastAPI did not decode a body sent as another type."""
    return tuple(err.get("loc", ())) == ("body",) and isinstance(err.get("input"), bytes)


def allowed_methods(app: Any, path: str) -> list[str]:
    """Every method some route serves at ``path`` (Starlette names only the first route's)."""
    methods: set[str] = set()
    for regex, served in app.state.route_methods:
        if regex.match(path):
            methods.update(served)
    return sorted(methods)


def _route_methods(routes: list[Any]) -> list[tuple[re.Pattern[str], frozenset[str]]]:
    return [
        (compile_path(route.path)[0], frozenset(route.methods))
        for route in routes
        if isinstance(getattr(route, "path", None), str) and getattr(route, "methods", None)
    ]
