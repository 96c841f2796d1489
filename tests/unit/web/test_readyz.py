"""``/readyz`` answers without a token: it says which components are up, never why (a
database error's text holds SQL and row values); the log and ``/api/v1/status`` say why."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from expertline.health import Health
from expertline.security.tokens import create_token
from expertline.settings import Settings
from expertline.web import ops
from expertline.web.app import AppContext, Services, create_app

FAILURE = (
    "database writes failing: (psycopg.errors.InvalidTextRepresentation) invalid input "
    'syntax for type json\nDETAIL:  Token "NaN" is invalid.\nCONTEXT:  JSON data, line 1: '
    '{"account": NaN...\n[SQL: INSERT INTO runtime_tasks (id, caller, data) VALUES '
    "(%(id)s, %(caller)s, %(data)s)]\n[parameters: {'id': 't1', 'caller': '+15551234567', "
    "'data': '{\"account\": NaN}'}]"
)


def test_readyz_shows_no_sql_nor_row_data(
    sqlite_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    health = Health()
    ctx = AppContext(Settings(node="n1"), sqlite_engine, services=Services(health=health))
    client = TestClient(create_app(ctx, [ops.router]))
    health.report("database", True, "sqlite")
    health.report("runtime", True, "routing")
    with caplog.at_level(logging.WARNING, logger="expertline.health"):
        health.report("runtime", False, FAILURE)
        health.report("runtime", False, FAILURE)  # the same again is not logged again

    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json() == {
        "ready": False,
        "active": True,
        "components": {
            "database": {"up": True, "required": True},
            "runtime": {"up": False, "required": True},
        },
    }
    for secret in ("SQL", "INSERT", "NaN", "+15551234567", "psycopg"):
        assert secret not in ready.text

    [logged] = [r.getMessage() for r in caplog.records]
    assert "component down component=runtime" in logged and "[parameters:" in logged

    token = create_token(sqlite_engine, "ops", "admin")
    status = client.get("/api/v1/status", headers={"Authorization": f"Bearer {token}"})
    detail = status.json()["components"]["runtime"]["detail"]
    assert detail.startswith("database writes failing: (psycopg.errors.InvalidTextRepresentation)")
    assert "\n" not in detail and "SQL" not in detail and "+15551234567" not in detail


def test_only_a_loss_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    health = Health()
    with caplog.at_level(logging.INFO, logger="expertline.health"):
        health.report("presence:corp", False, "connecting")  # starting: not up yet
        health.report("presence:corp", True, "online")
        health.report("presence:corp", False, "connection lost")  # a loss
        health.report("presence:corp", False, "stopped")  # a stop
    levels = [(r.levelname, r.getMessage().rsplit("detail=", 1)[1]) for r in caplog.records]
    assert levels == [
        ("INFO", "connecting"),
        ("INFO", "online"),
        ("WARNING", "connection lost"),
        ("INFO", "stopped"),
    ]
