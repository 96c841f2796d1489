"""Bad input at the HTTP edge: every JSON body decoded strictly on every route, bodies sent as
another type named, 405 with ``Allow``, cursors of other scripts' digits, and whole
configuration documents read only after the token is checked."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from rt_harness import Harness
from sqlalchemy import func, select

from expertline.db.tables import runtime_tasks
from expertline.security.tokens import create_token
from expertline.web.app import MAX_CONFIG_BODY

JSON = {"content-type": "application/json"}


@pytest.fixture
def admin(h: Harness) -> dict[str, str]:
    return {"Authorization": f"Bearer {create_token(h.engine, 'ops', 'admin')}"}


def _routes(h: Harness, admin: dict[str, str]) -> list[tuple[str, str, dict[str, str], str]]:
    """(method, url, auth, body prefix): routes of each kind with a JSON body, the body's
    value goes after the prefix."""
    return [
        ("POST", "/api/v1/tasks", h.rc, '{"queue": "billing", "attributes": {"a": '),  # hot
        (
            "PUT",
            "/api/v1/experts/alice/presence",
            h.as_expert("alice"),
            '{"x": {"status": ',
        ),  # FastAPI model
        ("POST", "/api/v1/experts", admin, '{"id": "zed", "attributes": {"a": '),  # config
        ("PUT", "/api/v1/config", admin, '{"experts": {"a": '),  # whole document, read after auth
    ]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("NaN}}", "NaN and Infinity are not JSON numbers at line 1 column"),
        ("Infinity}}", "NaN and Infinity are not JSON numbers at line 1 column"),
        ("-Infinity}}", "NaN and Infinity are not JSON numbers at line 1 column"),
        ("1e999}}", "a number too large for a double"),
        ('"\\ud800"}}', "no low surrogate in string"),
        ("[" * 70 + "]" * 70 + "}}", "nested more than 64 levels deep"),
        ('1,\n "x": }', "unexpected character, expected a JSON value at line 2 column 7"),
        ("1", "unexpected end of data at line 1 column"),
    ],
)
async def test_every_json_body_is_decoded_strictly(
    h: Harness, admin: dict[str, str], value: str, reason: str
) -> None:
    history = (await h.client.get("/api/v1/config/history", headers=admin)).json()["items"]
    for method, url, auth, prefix in _routes(h, admin):
        body = (prefix + value).encode()
        r = await h.client.request(method, url, content=body, headers={**auth, **JSON})
        assert r.status_code == 422, (url, r.text)
        message = r.json()["error"]["message"]
        assert message.startswith("body is not valid JSON: "), (url, message)
        assert reason in message, (url, message)
    with h.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(runtime_tasks)).scalar() == 0
    r = await h.client.get("/api/v1/config/history", headers=admin)
    assert r.json()["items"] == history  # no configuration was applied


async def test_a_body_not_sent_as_json_says_so(h: Harness, admin: dict[str, str]) -> None:
    for method, url, auth, prefix in _routes(h, admin):
        body = (prefix + '"x"}}').encode()
        for headers, named in (
            (auth, "no Content-Type"),
            ({**auth, "content-type": "text/plain"}, "Content-Type: text/plain"),
            (
                {**auth, "content-type": "application/x-www-form-urlencoded"},
                "Content-Type: application/x-www-form-urlencoded",
            ),
        ):
            r = await h.client.request(method, url, content=body, headers=headers)
            assert r.status_code == 422, (url, r.text)
            assert r.json()["error"]["message"] == (
                "the body must be JSON sent with Content-Type: application/json "
                f"(this one has {named})"
            ), url


async def test_405_names_every_method_of_the_path(h: Harness, admin: dict[str, str]) -> None:
    for method, url, allow in (
        ("DELETE", "/api/v1/tasks", "POST"),
        ("PATCH", "/api/v1/experts", "GET, POST"),
        ("POST", "/api/v1/experts/alice", "DELETE, GET, PUT"),
        ("PUT", "/readyz", "GET"),
    ):
        r = await h.client.request(method, url, headers=admin)
        assert r.status_code == 405, (method, url, r.text)
        assert r.headers["allow"] == allow, (method, url)
        assert r.json()["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize("after", ["\u00b2", "\u0661\u0662", "\U0001d7d9", "-1", "1.5", "9" * 19])
async def test_a_cursor_of_other_digits_is_422(h: Harness, after: str) -> None:
    for url in ("/api/v1/events", "/api/v1/records/rcd", "/api/v1/records/tcd"):
        r = await h.client.get(url, params={"after": after}, headers=h.rc)
        assert r.status_code == 422, (url, after, r.text)
        assert "bad cursor" in r.json()["error"]["message"]


async def test_a_config_body_is_read_only_after_the_token_is_checked(
    h: Harness, admin: dict[str, str]
) -> None:
    """An unauthenticated or non-admin body to /api/v1/config is refused unread; an admin's
    body over the limit is refused as soon as it crosses it, also without a length."""
    app = h.app
    chunk = b" " * (1 << 20)

    async def send_config(headers: dict[str, str], chunks: int) -> tuple[int, int]:
        """(status, body bytes the application took) for a chunked PUT of ``chunks`` MiB."""
        taken = 0
        sent = 0
        answer: dict[str, Any] = {}

        async def receive() -> dict[str, Any]:
            nonlocal taken, sent
            if sent == chunks:
                return {"type": "http.disconnect"}
            sent += 1
            taken += len(chunk)
            return {"type": "http.request", "body": chunk, "more_body": sent < chunks}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "PUT",
            "scheme": "http",
            "path": "/api/v1/config",
            "raw_path": b"/api/v1/config",
            "root_path": "",
            "query_string": b"",
            "server": ("testserver", 80),
            "client": ("127.0.0.1", 1),
            "headers": [
                (k.lower().encode(), v.encode())
                for k, v in {**headers, "content-type": "application/json"}.items()
            ],
        }
        await app(scope, receive, send)
        return answer["status"], taken

    over = MAX_CONFIG_BODY // len(chunk) + 2
    assert await send_config({}, over) == (401, 0)
    assert await send_config({"Authorization": "Bearer elt_nope"}, over) == (401, 0)
    assert await send_config(h.rc, over) == (403, 0)
    status, taken = await send_config(admin, over)
    assert status == 413 and MAX_CONFIG_BODY < taken <= MAX_CONFIG_BODY + len(chunk)
    declared = {**admin, "content-length": str(MAX_CONFIG_BODY + 1)}
    assert await send_config(declared, over) == (413, 0)


async def test_openapi_documents_every_refusal_with_the_problem_schema(h: Harness) -> None:
    doc = (await h.client.get("/openapi.json")).json()
    assert "HTTPValidationError" not in json.dumps(doc)  # FastAPI's own 422 shape is not ours
    problem = {"$ref": "#/components/schemas/ProblemResponse"}
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            if path.startswith("/api/v1"):
                assert "401" in responses, (method, path)
                assert path == "/api/v1/status" or "403" in responses, (method, path)
            if "{" in path and path.startswith("/api/v1/") and method != "get":
                assert "404" in responses, (method, path)
            if operation.get("parameters") or operation.get("requestBody"):
                assert "422" in responses, (method, path)
            for status, response in responses.items():
                if status.startswith(("4", "5")):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == problem, (method, path, status)
    runtime_ops = [doc["paths"]["/api/v1/tasks"]["post"], doc["paths"]["/api/v1/offers"]["get"]]
    assert all("503" in op["responses"] for op in runtime_ops)
    assert "409" in doc["paths"]["/api/v1/tasks/{task_id}/events"]["post"]["responses"]
    assert "409" in doc["paths"]["/api/v1/experts"]["post"]["responses"]
    report = doc["paths"]["/api/v1/reports/{name}"]["get"]["responses"]["200"]["content"]
    assert {"application/json", "text/csv"} <= report.keys()
    metrics = doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain"]


async def test_an_unknown_event_type_is_422_naming_the_types(h: Harness) -> None:
    for url in ("/api/v1/events", "/api/v1/events/stream"):
        r = await h.client.get(url, params={"type": ["task.moved", "unknown"]}, headers=h.rc)
        assert r.status_code == 422, (url, r.text)
        error = r.json()["error"]
        assert error["message"].startswith("unknown event type 'unknown': the types are ")
        for name in ("task.created", "task.moved", "task.escalated", "task.requeued"):
            assert name in error["message"]
        assert error["details"] == [{"path": "type", "message": "unknown event type 'unknown'"}]
    await h.create()
    r = await h.client.get("/api/v1/events", params={"type": "task.queued"}, headers=h.rc)
    assert r.status_code == 200
    assert [e["type"] for e in r.json()["items"]] == ["task.queued"]
    r = await h.client.get("/api/v1/events", params={"type": "task.moved"}, headers=h.rc)
    assert r.status_code == 200 and r.json()["items"] == []


def _json_body_operations(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """(method, path) of every operation of the OpenAPI document that takes a JSON body."""
    return [
        (method.upper(), path)
        for path, operations in doc["paths"].items()
        for method, operation in operations.items()
        if "application/json" in operation.get("requestBody", {}).get("content", {})
    ]


async def test_every_json_body_operation_says_what_is_wrong_with_its_body(
    h: Harness, admin: dict[str, str]
) -> None:
    """Malformed JSON names the reason and the position; a body sent without JSON's
    Content-Type, or with another, says so. Every operation of the OpenAPI document, by its
    own route (path parameters filled with names that need not exist: the body is read first)."""
    doc = (await h.client.get("/openapi.json")).json()
    operations = _json_body_operations(doc)
    assert ("POST", "/api/v1/tasks") in operations and len(operations) >= 17
    history = (await h.client.get("/api/v1/config/history", headers=admin)).json()["items"]
    for method, path in operations:
        url = re.sub(r"\{[^}]+\}", "x1", path)
        r = await h.client.request(method, url, content=b'{"a": ', headers={**admin, **JSON})
        assert r.status_code == 422, (method, path, r.text)
        assert r.json()["error"]["message"] == (
            "body is not valid JSON: unexpected end of data at line 1 column 7"
        ), (method, path)
        r = await h.client.request(
            method, url, content=b'{"a": 1,\n "b": tru}', headers={**admin, **JSON}
        )
        assert r.status_code == 422, (method, path, r.text)
        message = r.json()["error"]["message"]
        assert message.startswith("body is not valid JSON: "), (method, path, message)
        assert message.endswith(" at line 2 column 7"), (method, path, message)
        for headers, named in (
            (admin, "no Content-Type"),
            ({**admin, "content-type": "text/plain"}, "Content-Type: text/plain"),
        ):
            r = await h.client.request(method, url, content=b'{"a": 1}', headers=headers)
            assert r.status_code == 422, (method, path, named, r.text)
            assert r.json()["error"]["message"] == (
                "the body must be JSON sent with Content-Type: application/json "
                f"(this one has {named})"
            ), (method, path)
    with h.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(runtime_tasks)).scalar() == 0
    r = await h.client.get("/api/v1/config/history", headers=admin)
    assert r.json()["items"] == history
