"""A real RuntimeService on a real database, behind the real HTTP app (in-process ASGI)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

sys.path.insert(0, str(Path(__file__).parent))

from rt_harness import Harness, bearer, expert_headers, make_service, routing_config, store_experts

from expertline.security.tokens import create_token
from expertline.settings import Settings
from expertline.web.app import AppContext, create_app


@pytest.fixture
def service_options() -> dict[str, Any]:
    return {}


@pytest.fixture
async def h(engine: Engine, service_options: dict[str, Any]) -> AsyncIterator[Harness]:
    service = make_service(engine, routing_config(), **service_options)
    await service.async_start()
    ctx = AppContext(Settings(node="test-node"), engine)
    ctx.services.runtime = service
    app = create_app(ctx)
    store_experts(engine)
    headers = {
        role: bearer(create_token(engine, role, role))
        for role in ("routing-client", "reporting", "admin")
    }
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://expertline.test") as c:
            yield Harness(
                service,
                c,
                engine,
                headers["routing-client"],
                expert_headers(engine),
                headers["reporting"],
                app,
                headers["admin"],
            )
    finally:
        await service.async_stop()
