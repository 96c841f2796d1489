"""The hot routes (task create and read, task events, offer answers) against the FastAPI
routes they stand in front of: successes skip FastAPI, every refusal reads exactly as FastAPI
words it."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from rt_harness import Harness
from starlette.types import Receive, Scope, Send

from expertline.web.app import create_app
from expertline.web.hot import HotRoutes

JSON = {"content-type": "application/json"}


@pytest.fixture
def fastapi_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths of the HTTP requests that reached FastAPI's own request handling."""
    calls: list[str] = []
    original = FastAPI.__call__

    async def counting(self: FastAPI, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            calls.append(f"{scope['method']} {scope['path']}")
        await original(self, scope, receive, send)

    monkeypatch.setattr(FastAPI, "__call__", counting)
    return calls


async def test_a_lifecycle_is_served_without_fastapi(h: Harness, fastapi_calls: list[str]) -> None:
    for expert in ("alice", "bob"):
        assert (await h.presence(expert, "available")).status_code == 200
    assert len(fastapi_calls) == 2  # presence is an ordinary route
    fastapi_calls.clear()

    created = await h.create(caller="+15551234567", attributes={"account": "12345678"})
    assert created.status_code == 201
    assert created.headers["content-type"] == "application/json"
    task = created.json()
    assert task["status"] == "offered" and task["origin"] == "http"
    again = await h.create(external_id="icm-9")
    assert again.status_code == 201
    assert (await h.create(external_id="icm-9")).status_code == 200
    alice, bob = (o["id"] for o in sorted(task["offers"], key=lambda o: o["expert"]))

    declined = await h.client.post(f"/api/v1/offers/{bob}/decline", headers=h.xp["bob"])
    assert (declined.status_code, declined.json()["status"]) == (200, "declined")
    accepted = await h.client.post(
        f"/api/v1/offers/{alice}/accept", json={"phone": "+15559876543"}, headers=h.xp["alice"]
    )
    assert accepted.status_code == 200
    assert accepted.json()["status"] == "accepted" and accepted.json()["expert"] == "alice"
    connected = await h.event(task["id"], "connected")
    assert (connected.status_code, connected.json()["status"]) == (200, "connected")
    ended = await h.event(task["id"], "ended")
    assert (ended.status_code, ended.json()["status"]) == (200, "completed")
    assert ended.json()["label"] == "+15559876543"
    failed = await h.event(again.json()["id"], "failed", disposition=27)
    assert failed.json()["call_disposition"] == 27
    assert fastapi_calls == []

    assert (await h.task(task["id"]))["status"] == "completed"
    polled = await h.client.get(f"/api/v1/tasks/{task['id']}?wait=5&status=offered", headers=h.rep)
    assert polled.json()["status"] == "completed"  # not offered: answered at once
    assert fastapi_calls == []


async def test_accept_without_a_body_or_with_charset_is_served_hot(
    h: Harness, fastapi_calls: list[str]
) -> None:
    await h.presence("alice", "available")
    await h.presence("bob", "available")
    fastapi_calls.clear()
    created = await h.client.post(
        "/api/v1/tasks",
        content=b'{"entry_point": "+18005550100"}',
        headers={**h.rc, "content-type": "Application/JSON; charset=utf-8"},
    )
    assert created.status_code == 201
    offer = created.json()["offers"][0]
    r = await h.client.post(
        f"/api/v1/offers/{offer['id']}/accept", headers={**h.xp[offer["expert"]], **JSON}
    )
    assert r.status_code == 200 and r.json()["status"] == "accepted"
    assert fastapi_calls == []


async def _same_answer(hot: httpx.AsyncClient, plain: httpx.AsyncClient, **request: Any) -> Any:
    a = await hot.request(**request)
    b = await plain.request(**request)
    assert (a.status_code, a.content) == (b.status_code, b.content), request
    for header in ("content-type", "www-authenticate"):
        assert a.headers.get(header) == b.headers.get(header), (request, header)
    return a


async def test_refusals_read_as_fastapi_words_them(h: Harness) -> None:
    """Each refusal through the hot routes equals the answer of the same app without them."""
    plain_app = create_app(h.app.state.ctx)
    plain_app.hot_routes = HotRoutes()
    transport = httpx.ASGITransport(app=plain_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://expertline.test") as plain:
        await h.presence("alice", "available")
        task = (await h.create()).json()
        offer = task["offers"][0]["id"]
        events = f"/api/v1/tasks/{task['id']}/events"
        rc, ex, rep = h.rc, h.xp["alice"], h.rep
        cases: list[tuple[int, str, str, dict[str, str], bytes | None, str]] = [
            (422, "/api/v1/tasks", "bad JSON", {**rc, **JSON}, b'{"queue":', "body is not valid JSON: unexpected end of data at line 1 column 10"),
            (422, "/api/v1/tasks", "unknown field", {**rc, **JSON}, b'{"queue":"billing","color":1}', "color: Extra inputs are not permitted"),
            (422, "/api/v1/tasks", "wrong type", {**rc, **JSON}, b'{"queue":"billing","priority":1.5}', "priority: Input should be a valid integer"),
            (422, "/api/v1/tasks", "out of range", {**rc, **JSON}, b'{"queue":"billing","priority":5000}', "priority"),
            (422, "/api/v1/tasks", "not an object", {**rc, **JSON}, b"[1]", "valid dictionary"),
            (422, "/api/v1/tasks", "null", {**rc, **JSON}, b"null", "valid dictionary"),
            (422, "/api/v1/tasks", "no body", {**rc, **JSON}, b"", "Field required"),
            (422, "/api/v1/tasks", "no content type", rc, b'{"queue":"billing"}', "sent with Content-Type: application/json (this one has no Content-Type)"),
            (422, "/api/v1/tasks", "text", {**rc, "content-type": "text/plain"}, b'{"queue":"billing"}', "(this one has Content-Type: text/plain)"),
            (422, "/api/v1/tasks", "bad UTF-8", {**rc, **JSON}, b'{"queue":"\xff"}', "body is not valid JSON: not UTF-8 text"),
            (422, "/api/v1/tasks", "NaN", {**rc, **JSON}, b'{"queue":"billing","attributes":{"a":NaN}}', "body is not valid JSON: NaN and Infinity are not JSON numbers at line 1 column 38"),
            (422, "/api/v1/tasks", "-Infinity", {**rc, **JSON}, b'{"queue":"billing",\n"priority":-Infinity}', "NaN and Infinity are not JSON numbers at line 2 column 13"),
            (422, "/api/v1/tasks", "deep", {**rc, **JSON}, b'{"queue":"billing","attributes":{"a":' + b"[" * 70 + b"]" * 70 + b"}}", "nested more than 64 levels deep"),
            (422, "/api/v1/tasks", "both", {**rc, **JSON}, b'{"queue":"billing","entry_point":"+18005550100"}', "exactly one"),
            (404, "/api/v1/tasks", "unknown queue", {**rc, **JSON}, b'{"queue":"nope"}', "unknown queue 'nope'"),
            (401, "/api/v1/tasks", "no token", JSON, b'{"queue":"billing"}', "a bearer token is required"),
            (401, "/api/v1/tasks", "unknown token", {"authorization": "Bearer elt_nope", **JSON}, b'{"queue":"billing"}', "unknown or revoked"),
            (401, "/api/v1/tasks", "basic auth", {"authorization": "Basic eDp5", **JSON}, b'{"queue":"billing"}', "a bearer token is required"),
            (403, "/api/v1/tasks", "wrong role", {**rep, **JSON}, b'{"queue":"billing"}', "role 'reporting' may not call this endpoint (needs admin or routing-client)"),
            (403, "/api/v1/tasks", "wrong role, bad body", {**ex, **JSON}, b'{"color":1}', "role 'expert'"),
            (422, "/api/v1/tasks", "no token, bad JSON", JSON, b"{", "body is not valid JSON"),
            (422, events, "unknown type", {**rc, **JSON}, b'{"type":"hangup"}', "type: Input should be"),
            (422, events, "disposition not failed", {**rc, **JSON}, b'{"type":"ended","disposition":3}', "disposition applies only"),
            (409, events, "not applicable", {**rc, **JSON}, b'{"type":"connected"}', "'connected' applies only when it is assigned"),
            (404, "/api/v1/tasks/nope/events", "unknown task", {**rc, **JSON}, b'{"type":"ended"}', "unknown task 'nope'"),
            (403, events, "expert token", {**ex, **JSON}, b'{"type":"ended"}', "role 'expert'"),
            (404, "/api/v1/offers/nope/accept", "unknown offer", ex, None, "unknown offer 'nope'"),
            (422, f"/api/v1/offers/{offer}/accept", "bad phone", {**ex, **JSON}, b'{"phone":"a b"}', "phone: String should match pattern"),
            (422, f"/api/v1/offers/{offer}/accept", "bad JSON", {**ex, **JSON}, b"{", "body is not valid JSON"),
            (403, f"/api/v1/offers/{offer}/accept", "routing-client token", rc, None, "role 'routing-client'"),
            (401, f"/api/v1/offers/{offer}/decline", "no token", {}, None, "a bearer token is required"),
            (404, "/api/v1/offers/nope/decline", "unknown offer", ex, None, "unknown offer 'nope'"),
            (403, f"/api/v1/offers/{offer}/decline", "reporting token", rep, None, "role 'reporting'"),
        ]  # fmt: skip
        for status, path, what, headers, content, words in cases:
            r = await _same_answer(
                h.client, plain, method="POST", url=path, headers=headers, content=content
            )
            assert r.status_code == status, (what, r.text)
            assert words in r.json()["error"]["message"], (what, r.text)
        unauthorized = await h.client.post("/api/v1/tasks", json={"queue": "billing"})
        assert unauthorized.headers["www-authenticate"] == "Bearer"
        assert unauthorized.json() == {
            "error": {
                "code": "unauthorized",
                "message": "a bearer token is required (Authorization: Bearer <token>)",
            }
        }
        invalid = (await h.create(color="red")).json()
        assert invalid == {
            "error": {
                "code": "invalid",
                "message": "invalid request: color: Extra inputs are not permitted",
                "details": [{"path": "color", "message": "Extra inputs are not permitted"}],
            }
        }

        accepted = await h.client.post(f"/api/v1/offers/{offer}/accept", headers=ex)
        assert accepted.status_code == 200
        again = await _same_answer(
            h.client, plain, method="POST", url=f"/api/v1/offers/{offer}/accept", headers=ex
        )
        assert again.json()["error"] == {
            "code": "conflict",
            "message": f"offer {offer} is accepted; it can no longer be answered",
        }
        task_url = f"/api/v1/tasks/{task['id']}"
        for status, url, what, headers, words in [
            (422, task_url + "?wait=x", "not a number", rc, "query.wait: Input should be a valid number"),
            (422, task_url + "?wait=600", "too long", rc, "query.wait: Input should be less than or equal to 60"),
            (422, task_url + "?wait=", "empty", rc, "query.wait"),
            (422, task_url + "?wait=1&wait=-1", "last value counts", rc, "greater than or equal to 0"),
            (404, "/api/v1/tasks/nope?wait=1", "unknown task", rc, "unknown task 'nope'"),
            (401, task_url, "no token", {}, "a bearer token is required"),
            (401, task_url, "unknown token", {"authorization": "Bearer elt_nope"}, "unknown or revoked"),
        ]:  # fmt: skip
            r = await _same_answer(h.client, plain, method="GET", url=url, headers=headers)
            assert r.status_code == status, (what, r.text)
            assert words in r.json()["error"]["message"], (what, r.text)
        for url in (task_url + "?wait=0.01&wait=0&other=1", task_url + "?status="):
            r = await _same_answer(h.client, plain, method="GET", url=url, headers=h.rep)
            assert r.json()["id"] == task["id"]

        # Not hot: another method or a trailing slash reach FastAPI's routing as before.
        for method, url in (
            ("DELETE", "/api/v1/tasks"),
            ("GET", events),
            ("POST", "/api/v1/tasks/"),
        ):
            await _same_answer(h.client, plain, method=method, url=url, headers=h.rc, json={})

        await h.service.async_stop()
        for url, headers, body in (
            ("/api/v1/tasks", rc, {"queue": "billing"}),
            (events, rc, {"type": "ended"}),
            (f"/api/v1/offers/{offer}/decline", ex, None),
        ):
            r = await _same_answer(
                h.client, plain, method="POST", url=url, headers=headers, json=body
            )
            assert r.status_code == 503
            assert r.json()["error"]["code"] == "unavailable"


async def test_openapi_still_describes_the_hot_endpoints(h: Harness) -> None:
    doc = (await h.client.get("/openapi.json")).json()
    paths, schemas = doc["paths"], doc["components"]["schemas"]

    def body_ref(operation: dict[str, Any]) -> str:
        return json.dumps(operation["requestBody"]["content"]["application/json"]["schema"])

    create = paths["/api/v1/tasks"]["post"]
    assert "#/components/schemas/TaskCreate" in body_ref(create)
    assert {"200", "201", "404", "422"} <= create["responses"].keys()
    events = paths["/api/v1/tasks/{task_id}/events"]["post"]
    assert "#/components/schemas/TaskEvent" in body_ref(events)
    accept = paths["/api/v1/offers/{offer_id}/accept"]["post"]
    assert "#/components/schemas/AcceptBody" in body_ref(accept)
    assert "post" in paths["/api/v1/offers/{offer_id}/decline"]
    query = {p["name"]: p for p in paths["/api/v1/tasks/{task_id}"]["get"]["parameters"]}
    assert query["wait"]["in"] == "query"
    assert (query["wait"]["schema"]["minimum"], query["wait"]["schema"]["maximum"]) == (0, 60)
    assert query["status"]["in"] == "query" and query["task_id"]["in"] == "path"
    assert set(schemas["TaskCreate"]["properties"]) >= {"entry_point", "queue", "attributes"}
    assert schemas["TaskEvent"]["properties"]["type"]["enum"] == [
        "connected",
        "ended",
        "abandoned",
        "failed",
    ]
