"""Hot-route matching and JSON encoding, without a server."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import BaseModel, ConfigDict

from expertline.errors import ExpertlineError, TooLarge
from expertline.security.tokens import TokenInfo
from expertline.web.app import problem_response
from expertline.web.bodies import decode_json, is_json
from expertline.web.hot import NO_JSON, HotRoutes, json_response, read_body, replay_body


async def _handler(body: Any, **params: str) -> tuple[int, Any]:
    return 200, params


def test_match_is_by_method_and_whole_path() -> None:
    routes = HotRoutes()
    routes.add("POST", "/api/v1/tasks", _handler, roles=("routing-client",))
    routes.add("POST", "/api/v1/tasks/{task_id}/events", _handler, roles=("routing-client",))
    hit = routes.match("POST", "/api/v1/tasks/t-1/events")
    assert hit is not None and hit[0].path == "/api/v1/tasks/{task_id}/events"
    assert hit[1] == {"task_id": "t-1"}
    assert hit[0].allowed == {"admin", "routing-client"}
    assert routes.match("POST", "/api/v1/tasks")[1] == {}  # type: ignore[index]
    for method, path in (
        ("GET", "/api/v1/tasks"),
        ("POST", "/api/v1/tasks/"),
        ("POST", "/api/v1/tasks/a/b/events"),
        ("POST", "/api/v1/tasks//events"),
        ("POST", "/api/v1/tasks/t-1/events/x"),
    ):
        assert routes.match(method, path) is None, (method, path)


def test_adding_a_route_again_replaces_it() -> None:
    routes = HotRoutes()
    routes.add("POST", "/x/{id}", _handler, roles=())
    routes.add("POST", "/x/{id}", _handler, roles=("expert",))
    hit = routes.match("POST", "/x/1")
    assert hit is not None and hit[0].allowed == {"admin", "expert"}


def test_json_response_is_compact_utf8_and_takes_any_json_value() -> None:
    r = json_response({"caller": "é", "n": [1, 1.5, True, None]}, 201)
    assert (r.status_code, r.media_type) == (201, "application/json")
    assert r.body == '{"caller":"é","n":[1,1.5,true,null]}'.encode()
    huge = json_response({"account": 10**30})  # beyond orjson's 64-bit integers
    assert json.loads(huge.body) == {"account": 10**30}


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: str


def _scope(path: str, headers: dict[str, str]) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "POST",
        "path": path,
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
    }


async def _serve(body_chunks: list[bytes], headers: dict[str, str]) -> tuple[list[Any], Any]:
    """Serve one request; returns (messages sent, what the fallback app got or None)."""
    routes = HotRoutes()

    async def handler(body: _Body, task_id: str) -> tuple[int, Any]:
        return 200, {"task": task_id, "type": body.type}

    routes.add("POST", "/t/{task_id}", handler, roles=("routing-client",), body=_Body)
    incoming = [
        {"type": "http.request", "body": c, "more_body": i < len(body_chunks) - 1}
        for i, c in enumerate(body_chunks)
    ]

    async def receive() -> Any:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    fallback_got: list[Any] = []

    async def fallback(scope: Any, receive: Any, send: Any) -> None:
        fallback_got.append((await receive())["body"])

    token = TokenInfo(1, "cc", "routing-client", datetime.now(UTC), None)
    hit = routes.match("POST", "/t/42")
    assert hit is not None
    body = await read_body(receive, 1 << 20)  # as the application does before the hot routes
    assert body is not None
    data = decode_json(body) if body and is_json(headers.get("content-type")) else NO_JSON
    await routes.serve(
        *hit,
        _scope("/t/42", headers),
        body,
        data,
        replay_body(body, receive),
        send,
        verifier=lambda value: token if value == "good" else None,  # type: ignore[arg-type]
        fallback=fallback,
        problem=lambda exc: json_response({"error": exc.code}, exc.http_status),
    )
    return sent, fallback_got[0] if fallback_got else None


async def test_a_body_in_several_chunks_is_read_whole() -> None:
    good = {"authorization": "Bearer good", "content-type": "application/json"}
    sent, fallback = await _serve([b'{"ty', b'pe": "ended"}'], good)
    assert fallback is None
    assert sent[0]["status"] == 200
    assert json.loads(sent[1]["body"]) == {"task": "42", "type": "ended"}


async def test_what_the_hot_route_refuses_reaches_fastapi_with_its_body() -> None:
    good = {"authorization": "Bearer good", "content-type": "application/json"}
    for chunks, headers in (
        ([b'{"type": "ended", "x": 1}'], good),  # invalid for the model
        ([b'"ended"'], good),  # JSON, not an object
        ([b'{"type": "ended"}'], {**good, "authorization": "Bearer bad"}),  # unknown token
        ([b'{"type": "ended"}'], {"content-type": "application/json"}),  # no token
        ([b'{"type": "ended"}'], {"authorization": "Bearer good"}),  # no content type
    ):
        sent, fallback = await _serve(chunks, headers)
        assert sent == [] and fallback == b"".join(chunks), (chunks, headers)


async def test_a_body_growing_over_the_limit_is_refused_while_it_is_read() -> None:
    chunks = [b"x" * 600, b"x" * 600]
    incoming = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]

    async def receive() -> Any:
        return incoming.pop(0)

    with pytest.raises(TooLarge, match="over 1,000 bytes"):
        await read_body(receive, 1000)
    assert incoming == []  # refused at the chunk that crossed the limit


def test_declare_serves_hot_and_declares_the_same_route_on_fastapi() -> None:
    """One declaration: the hot route and the FastAPI route behind it share path, method,
    roles and model, and FastAPI's endpoint awaits the same handler."""
    routes, router = HotRoutes(), APIRouter(prefix="/api/v1")

    async def report(body: _Body, task_id: str) -> tuple[int, Any]:
        return 202, {"task": task_id, "type": body.type}

    routes.declare(router, "POST", "/t/{task_id}", report, roles=("routing-client",), body=_Body)
    hit = routes.match("POST", "/api/v1/t/7")
    assert hit is not None and hit[0].allowed == {"admin", "routing-client"}
    (declared,) = router.routes
    assert isinstance(declared, APIRoute) and declared.name == "report"
    assert (declared.path, declared.methods) == ("/api/v1/t/{task_id}", {"POST"})

    app = FastAPI()
    app.include_router(router)
    app.add_exception_handler(ExpertlineError, lambda _, exc: problem_response(exc))  # type: ignore[arg-type]
    tokens = {"rc": "routing-client", "ex": "expert"}
    app.state.verify_token = lambda value: (
        TokenInfo(1, value, tokens[value], datetime.now(UTC), None) if value in tokens else None
    )
    client = TestClient(app, raise_server_exceptions=False)
    answer = client.post(
        "/api/v1/t/7", json={"type": "ended"}, headers={"Authorization": "Bearer rc"}
    )
    assert (answer.status_code, answer.json()) == (202, {"task": "7", "type": "ended"})
    wrong_role = client.post(
        "/api/v1/t/7", json={"type": "x"}, headers={"Authorization": "Bearer ex"}
    )
    assert wrong_role.status_code == 403
    assert client.post("/api/v1/t/7", json={"type": "x"}).status_code == 401
    invalid = client.post("/api/v1/t/7", json={"kind": "x"}, headers={"Authorization": "Bearer rc"})
    assert invalid.status_code == 422
