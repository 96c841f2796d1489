"""The HTTP application: one FastAPI app; each part of the product contributes routers.

Parts register themselves in ``ROUTER_FACTORIES`` order; each factory gets the ``AppContext``
and returns an ``APIRouter`` (or None when its role is not running on this node). A factory may
also serve some of its routes hot (``ctx.hot_routes``, see ``expertline.web.hot``): those
requests are answered before FastAPI's per-request machinery when they are fit to succeed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import Engine
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from expertline import __version__
from expertline.errors import ExpertlineError, Problem, TooLarge
from expertline.settings import Settings
from expertline.web.auth import TokenVerifier
from expertline.web.hot import HotRoutes, read_body, replay_body


@dataclass
class AppContext:
    """What routers need: settings, the database, and the services running on this node."""

    settings: Settings
    engine: Engine
    services: dict[str, Any] = field(default_factory=dict)
    hot_routes: HotRoutes = field(default_factory=HotRoutes)


RouterFactory = Callable[[AppContext], Any]


MAX_BODY = 1 << 20  # bytes of a request body: tasks, presence, offers, tokens, queries
MAX_CONFIG_BODY = 64 << 20  # a whole configuration document (100,000 experts fit)


def body_limit(path: str) -> int:
    return MAX_CONFIG_BODY if path.startswith("/api/v1/config") else MAX_BODY


class ExpertlineAPI(FastAPI):
    """FastAPI that reads each request body first (refusing one over its limit with 413,
    before anything is done) and offers the request to the hot routes."""

    hot_routes: HotRoutes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        limit = body_limit(scope["path"])
        declared = _content_length(scope)
        try:
            if declared is not None and declared > limit:
                raise TooLarge(limit)
            body = await read_body(receive, limit)
        except TooLarge as exc:
            await problem_response(exc)(scope, receive, send)
            return
        if body is None:  # the client went away before sending its body
            return
        receive = replay_body(body, receive)
        if not scope.get("root_path") and not self.root_path:
            hit = self.hot_routes.match(scope["method"], scope["path"])
            if hit is not None:
                await self.hot_routes.serve(
                    *hit,
                    scope,
                    body,
                    receive,
                    send,
                    verifier=self.state.verify_token,
                    fallback=super().__call__,
                    problem=problem_response,
                )
                return
        await super().__call__(scope, receive, send)


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
    for factory in factories:
        router = factory(ctx)
        if router is not None:
            app.include_router(router)
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
    return resp


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ExpertlineError)
    async def _expertline(_: Request, exc: ExpertlineError) -> JSONResponse:
        return problem_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            Problem(
                ".".join(str(p) for p in err.get("loc", ()) if p != "body"),
                err.get("msg", "invalid"),
            )
            for err in exc.errors()
        ]
        summary = "; ".join(str(p) for p in problems[:3])
        return error_response(422, "invalid", f"invalid request: {summary}", problems)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail))
