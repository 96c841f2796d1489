"""The HTTP application: one FastAPI app; each part of the product contributes routers.

Parts register themselves in ``ROUTER_FACTORIES`` order; each factory gets the ``AppContext``
and returns an ``APIRouter`` (or None when its role is not running on this node).
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

from expertline import __version__
from expertline.errors import ExpertlineError, Problem
from expertline.settings import Settings
from expertline.web.auth import TokenVerifier


@dataclass
class AppContext:
    """What routers need: settings, the database, and the services running on this node."""

    settings: Settings
    engine: Engine
    services: dict[str, Any] = field(default_factory=dict)


RouterFactory = Callable[[AppContext], Any]


def create_app(ctx: AppContext, factories: list[RouterFactory] | None = None) -> FastAPI:
    app = FastAPI(
        title="expertline",
        version=__version__,
        description="Routes contact-center work to enterprise experts by IM presence.",
        openapi_url="/openapi.json",
    )
    app.state.ctx = ctx
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


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ExpertlineError)
    async def _expertline(_: Request, exc: ExpertlineError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.http_status == 401 else None
        resp = error_response(exc.http_status, exc.code, exc.message, exc.details)
        if headers:
            resp.headers.update(headers)
        return resp

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
