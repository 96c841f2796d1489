"""Reports over HTTP: JSON and CSV with the SPEC's columns, roles, bad input, pages."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from reporting_scenario import EXPERTS, QUEUES_15M, QUEUES_60M, write_all
from sqlalchemy import Engine

from expertline.reporting import http as reporting_http
from expertline.reporting import migrate as reporting_migrate
from expertline.reporting.ingest import Ingester
from expertline.security.tokens import create_token
from expertline.settings import Settings
from expertline.web import signin
from expertline.web.app import AppContext, create_app

HOUR = {"from": "2026-11-25T10:00:00Z", "to": "2026-11-25T11:00:00Z"}


@pytest.fixture
def client(engine: Engine, db_url: str, tmp_path) -> Iterator[TestClient]:
    reporting_migrate.upgrade(engine)
    write_all(engine)
    Ingester(engine, engine).run_until_idle()
    ctx = AppContext(Settings(db=db_url, data_dir=tmp_path), engine)
    app = create_app(ctx, factories=[reporting_http.router, signin.router])
    with TestClient(app, base_url="http://127.0.0.1") as c:
        yield c


def auth(engine: Engine, role: str = "reporting") -> dict[str, str]:
    return {"Authorization": f"Bearer {create_token(engine, f'{role}-user', role)}"}


def test_queue_report_json_and_csv(client: TestClient, engine: Engine) -> None:
    h = auth(engine)
    r = client.get("/api/v1/reports/queues", params={**HOUR, "interval": "15m"}, headers=h)
    assert r.status_code == 200
    assert r.json() == {"items": QUEUES_15M}
    r = client.get(
        "/api/v1/reports/queues", params={**HOUR, "interval": "60m", "format": "csv"}, headers=h
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert list(rows[0]) == list(QUEUES_60M[0])
    assert [(x["queue_id"], x["offered"], x["service_level"]) for x in rows] == [
        ("billing", "6", "0.5"),
        ("sales", "4", "1.0"),
    ]


def test_expert_and_task_reports(client: TestClient, engine: Engine) -> None:
    h = auth(engine, "admin")
    r = client.get("/api/v1/reports/experts", params=HOUR, headers=h)
    assert r.status_code == 200
    # Open states count up to `to` (the range is in the past).
    assert r.json()["items"] == EXPERTS
    r = client.get("/api/v1/reports/tasks", params={**HOUR, "limit": 5}, headers=h)
    body = r.json()
    assert [i["task_id"] for i in body["items"]] == ["t1", "t2", "t3", "t4", "t5"]
    r2 = client.get(
        "/api/v1/reports/tasks", params={**HOUR, "limit": 5, "after": body["next"]}, headers=h
    )
    assert [i["task_id"] for i in r2.json()["items"]] == ["t6", "t7", "t9", "t8"]
    assert r2.json()["next"] is None
    r = client.get("/api/v1/reports/tasks", params={**HOUR, "format": "csv"}, headers=h)
    lines = r.text.splitlines()
    assert lines[0] == (
        "task_id,queue_id,queue_name,status,call_disposition,expert_id,created_at,ended_at,"
        "wait,talk_time,offers"
    )
    assert len(lines) == 10


def test_roles_and_bad_input(client: TestClient, engine: Engine) -> None:
    assert client.get("/api/v1/reports/queues").status_code == 401
    r = client.get("/api/v1/reports/queues", headers=auth(engine, "routing-client"))
    assert r.status_code == 403
    r = client.get("/api/v1/reports/experts", params=HOUR, headers=auth(engine, "supervisor"))
    assert r.status_code == 200  # a supervisor sees reports
    h = auth(engine)
    r = client.get("/api/v1/reports/queues", params={"from": "soon", "interval": "5m"}, headers=h)
    assert r.status_code == 422
    assert [d["path"] for d in r.json()["error"]["details"]] == ["from", "interval"]
    assert client.get("/api/v1/reports/agents", headers=h).status_code == 422
    r = client.get("/api/v1/reports/queues", params={**HOUR, "format": "xml"}, headers=h)
    assert r.status_code == 422


def test_pages_sign_in_once_and_keep_a_session(client: TestClient, engine: Engine) -> None:
    r = client.get("/reports", params=HOUR, follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"].startswith("/sign-in?next=%2Freports")
    form = client.get("/sign-in", params={"next": "/reports"})
    form_csrf = form.text.split('name="form_csrf" value="')[1].split('"')[0]
    r = client.post(
        "/sign-in", data={"token": "elt_wrong", "next": "/reports", "form_csrf": form_csrf}
    )
    assert r.status_code == 401
    assert "unknown" in r.text
    wrong_role = create_token(engine, "cc", "routing-client")
    r = client.get("/reports", params={"token": wrong_role}, follow_redirects=False)
    assert r.headers["location"].startswith("/sign-in")
    token = create_token(engine, "boss", "reporting")
    r = client.get("/reports", params={**HOUR, "token": token}, follow_redirects=False)
    assert r.status_code == 303
    assert "token" not in r.headers["location"]
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and token not in cookie
    page = client.get(r.headers["location"])
    assert page.status_code == 200
    assert 'data-chart="queue-volume"' in page.text
    assert 'data-chart="expert-utilization"' in page.text
    assert "Billing Desk" in page.text and "Alice Ng-Smith" in page.text
    tasks = client.get("/reports/tasks", params=HOUR)
    assert tasks.status_code == 200
    assert tasks.text.count('<tr data-task="') == 9
    download = client.get("/reports/queues.csv", params={**HOUR, "interval": "60m"})
    assert download.headers["content-type"].startswith("text/csv")
    assert download.text.splitlines()[1].startswith(
        "2026-11-25T10:00:00.000Z,billing,Billing Desk,6,"
    )
    bad = client.get("/reports", params={"from": "nope"})
    assert "expected an ISO 8601" in bad.text
    csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
    assert client.post("/sign-out", data={"csrf": "forged"}).status_code == 403
    assert client.get("/reports", follow_redirects=False).status_code == 200
    client.post("/sign-out", data={"csrf": csrf})
    assert client.get("/reports", follow_redirects=False).status_code == 303


def test_reports_say_when_the_reporting_schema_is_missing(
    engine: Engine, db_url: str, tmp_path
) -> None:
    ctx = AppContext(Settings(db=db_url, data_dir=tmp_path), engine)
    app = create_app(ctx, factories=[reporting_http.router])
    with TestClient(app, base_url="http://127.0.0.1") as c:
        r = c.get("/api/v1/reports/queues", headers=auth(engine))
    assert r.status_code == 503
    assert "reporting schema is empty" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    "params",
    [
        {"to": "0001-01-01T00:00:00Z"},
        {"from": "0001-01-01T00:00:00+01:00"},
        {"to": "9999-12-31T23:59:59-01:00"},
        {"from": "9999-12-31T00:00:00Z", "to": "9999-12-31T23:59:59Z"},
        {"from": "0001-01-01", "to": "0001-01-01T01:00"},
    ],
)
def test_times_near_the_ends_of_the_calendar_are_422(
    client: TestClient, engine: Engine, params: dict[str, str]
) -> None:
    h = auth(engine)
    for name in ("queues", "experts", "tasks"):
        for extra in ({}, {"interval": "60m"}, {"format": "csv"}):
            r = client.get(f"/api/v1/reports/{name}", params={**params, **extra}, headers=h)
            assert r.status_code == 422, (name, params, r.text)
            [*problems] = r.json()["error"]["details"]
            assert all("1970 to 3000" in p["message"] for p in problems), problems
    cursor = {**HOUR, "after": "0001-01-01T00:00:00+01:00|t1"}
    r = client.get("/api/v1/reports/tasks", params=cursor, headers=h)
    assert r.status_code == 422 and "not a cursor" in r.text
    r = client.get(
        "/api/v1/reports/tasks", params={**HOUR, "after": "2026-11-25T10:00Z|a\x00"}, headers=h
    )
    assert r.status_code == 422 and "not a cursor" in r.text
