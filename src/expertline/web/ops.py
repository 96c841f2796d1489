"""Operations endpoints: liveness, readiness, Prometheus metrics and node status."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST

from expertline import __version__
from expertline.errors import problem_responses
from expertline.health import Health
from expertline.metrics import NodeMetrics
from expertline.web.app import AppContext
from expertline.web.auth import bearer


def router(ctx: AppContext) -> APIRouter:
    r = APIRouter()
    health = ctx.services.health
    node_metrics = NodeMetrics(ctx)

    @r.get("/healthz", tags=["operations"], summary="The process is alive")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @r.get("/readyz", tags=["operations"], summary="This node is active and its parts are up")
    def readyz() -> JSONResponse:
        # No token here: each component says up or not, never why (the log and the
        # authenticated /api/v1/status have the reason).
        body = _health_body(health, details=False)
        return JSONResponse(body, status_code=200 if body["ready"] else 503)

    @r.get(
        "/metrics",
        tags=["operations"],
        summary="Prometheus metrics",
        response_class=PlainTextResponse,
    )
    async def metrics() -> Response:
        # On the event loop: the node's collector reads the runtime's state where it lives.
        return Response(await node_metrics.async_exposition(), media_type=CONTENT_TYPE_LATEST)

    @r.get(
        "/api/v1/status",
        tags=["operations"],
        summary="Node, role, active/standby, config version",
        responses=problem_responses(401),
    )
    def status(request: Request, _: Any = Depends(bearer)) -> dict[str, Any]:
        version_of = ctx.services.config_version
        return {
            "node": ctx.settings.node,
            "role": ctx.settings.role,
            "version": __version__,
            "state": "active" if health.active else "standby",
            "config_version": version_of() if callable(version_of) else None,
            **_health_body(health),
        }

    return r


def _health_body(health: Health, details: bool = True) -> dict[str, Any]:
    return {
        "ready": health.ready(),
        "active": health.active,
        "components": {
            c.name: {
                "up": c.up,
                "required": c.required,
                **({"detail": c.detail} if details else {}),
            }
            for c in health.components()
        },
    }
