"""The routing-client and presence API end to end, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import httpx
import uvicorn
from rt_harness import PHONES, Harness
from sqlalchemy import func, select

from expertline.db.tables import routing_feed, runtime_tasks, tcd, webhook_deliveries
from expertline.web.app import MAX_BODY, body_limit
from support.wait import async_eventually


async def _two_offers(h: Harness) -> tuple[str, dict[str, Any], dict[str, Any]]:
    for expert in ("alice", "bob"):
        assert (await h.presence(expert, "available")).status_code == 200
    r = await h.create(caller="+15551234567")
    assert r.status_code == 201, r.text
    task = r.json()
    alice = await h.open_offers("alice")
    bob = await h.open_offers("bob")
    assert len(alice) == 1 and len(bob) == 1
    return task["id"], alice[0], bob[0]


async def test_broadcast_first_accept_wins_and_the_task_ends_with_one_tcd(h: Harness) -> None:
    task_id, alice_offer, bob_offer = await _two_offers(h)
    assert alice_offer["task_id"] == bob_offer["task_id"] == task_id
    assert (await h.task(task_id))["status"] == "offered"

    r = await h.answer(alice_offer, "accept")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "accepted"

    task = await h.task(task_id)
    assert task["status"] == "assigned"
    assert task["expert"] == "alice"
    assert task["label"] == PHONES["alice"]
    assert await h.open_offers("bob") == []
    late = await h.answer(bob_offer, "accept")
    assert late.status_code == 409, late.text
    history = await h.client.get("/api/v1/offers?expert=bob&status=all", headers=h.xp["bob"])
    assert [o["status"] for o in history.json()["items"]] == ["withdrawn"]

    assert (await h.event(task_id, "connected")).json()["status"] == "connected"
    ended = await h.event(task_id, "ended")
    assert ended.status_code == 200 and ended.json()["status"] == "completed"

    tcds = await h.records("tcd")
    assert [(t["task_id"], t["call_disposition"]) for t in tcds] == [(task_id, 13)]
    assert tcds[0]["node"] == "test-node"
    rcds = await h.records("rcd")
    assert [(r["task_id"], r["label"]) for r in rcds] == [(task_id, PHONES["alice"])]
    types = [e["type"] for e in await h.events(task_id=task_id)]
    for expected in ("task.created", "offer.created", "offer.accepted", "offer.withdrawn"):
        assert expected in types
    assert types.count("task.record") == 1
    record = (await h.events(type="task.record"))[0]["data"]
    assert (record["node"], record["call_disposition"], record["expert_id"]) == (
        "test-node",
        13,
        "alice",
    )


async def test_abandoned_while_offered_gets_tcd_2_and_offers_are_withdrawn(h: Harness) -> None:
    task_id, _, _ = await _two_offers(h)
    r = await h.event(task_id, "abandoned")
    assert r.status_code == 200 and r.json()["status"] == "abandoned"
    assert await h.open_offers("alice") == [] and await h.open_offers("bob") == []
    assert [t["call_disposition"] for t in await h.records("tcd")] == [2]
    again = await h.event(task_id, "abandoned")
    assert again.status_code == 409
    assert len(await h.records("tcd")) == 1


async def test_same_external_id_returns_the_same_task(h: Harness) -> None:
    first = await h.create(external_id="icm-1")
    second = await h.create(external_id="icm-1", caller="someone else")
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]
    concurrent = await asyncio.gather(*(h.create(external_id="icm-2") for _ in range(5)))
    assert sorted(r.status_code for r in concurrent) == [200, 200, 200, 200, 201]
    assert len({r.json()["id"] for r in concurrent}) == 1
    with h.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(runtime_tasks)).scalar() == 2


async def test_long_poll_returns_as_soon_as_the_status_changes(h: Harness) -> None:
    task_id, alice_offer, _ = await _two_offers(h)
    started = time.monotonic()
    poll = asyncio.create_task(h.client.get(f"/api/v1/tasks/{task_id}?wait=20", headers=h.rc))
    await asyncio.sleep(0.2)
    assert not poll.done()
    await h.answer(alice_offer, "accept")
    r = await asyncio.wait_for(poll, timeout=5)
    assert r.json()["status"] == "assigned"
    assert time.monotonic() - started < 5
    bounded = await h.client.get(f"/api/v1/tasks/{task_id}?wait=0.2", headers=h.rc)
    assert bounded.json()["status"] == "assigned"
    too_long = await h.client.get(f"/api/v1/tasks/{task_id}?wait=600", headers=h.rc)
    assert too_long.status_code == 422


async def test_bad_input_is_refused_clearly_and_changes_nothing(h: Harness) -> None:
    bad = [
        ({"entry_point": "+18005550100", "queue": "billing"}, 422, "exactly one"),
        ({"queue": None, "entry_point": None}, 422, "exactly one"),
        ({"entry_point": "+19999999999"}, 404, "unknown entry point"),
        ({"queue": "nope", "entry_point": None}, 404, "unknown queue"),
        ({"entry_point": "+18005550100", "channel": "fax"}, 422, "channel"),
        ({"entry_point": "+18005550100", "color": "red"}, 422, "color"),
        ({"entry_point": "+18005550100", "priority": 5000}, 422, "priority"),
        ({"entry_point": "+18005550100", "callback_url": "ftp://x"}, 422, "callback_url"),
        ({"entry_point": "+18005550100", "callback_url": "http://[::1"}, 422, "not a valid URL"),
        ({"entry_point": "+18005550100", "callback_url": "http://h:99999/"}, 422, "port"),
        ({"entry_point": "+18005550100", "callback_url": "http:///x"}, 422, "needs a host"),
    ]
    for body, status, words in bad:
        r = await h.client.post("/api/v1/tasks", json=body, headers=h.rc)
        assert r.status_code == status, (body, r.text)
        assert words in r.text, (body, r.text)
    assert (await h.client.post("/api/v1/tasks", json={}, headers=h.rep)).status_code == 403
    assert (await h.client.post("/api/v1/tasks", json={})).status_code == 401

    assert (await h.event("no-such-task", "ended")).status_code == 404
    r = await h.create()
    task_id = r.json()["id"]
    conflict = await h.event(task_id, "connected")
    assert conflict.status_code == 409 and "queued" in conflict.text
    assert (await h.event(task_id, "hangup")).status_code == 422
    nope = await h.client.post("/api/v1/offers/nope/accept", headers=h.xp["alice"])
    assert nope.status_code == 404
    assert (await h.presence("alice", "busy")).status_code == 422
    assert (await h.presence("nobody", "available")).status_code == 404
    assert (await h.client.get("/api/v1/records/tcd?after=x", headers=h.rc)).status_code == 422
    assert (await h.client.get("/api/v1/records/xyz", headers=h.rc)).status_code == 422

    assert (await h.task(task_id))["status"] == "queued"
    with h.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(runtime_tasks)).scalar() == 1
        assert conn.execute(select(func.count()).select_from(tcd)).scalar() == 0
        assert conn.execute(select(func.count()).select_from(webhook_deliveries)).scalar() == 0
        created = conn.execute(
            select(func.count()).where(routing_feed.c.type == "task.created")
        ).scalar()
        assert created == 1


async def test_feeds_resume_from_their_cursor(h: Harness) -> None:
    ids = []
    for _ in range(3):
        r = await h.create()
        ids.append(r.json()["id"])
        await h.event(ids[-1], "abandoned")
    first = (await h.client.get("/api/v1/records/tcd?limit=2", headers=h.rep)).json()
    assert [t["task_id"] for t in first["items"]] == ids[:2]
    rest = (await h.client.get(f"/api/v1/records/tcd?after={first['next']}", headers=h.rep)).json()
    assert [t["task_id"] for t in rest["items"]] == ids[2:]
    empty = (await h.client.get(f"/api/v1/records/tcd?after={rest['next']}", headers=h.rep)).json()
    assert empty == {"items": [], "next": rest["next"]}
    keys = [t["recovery_key"] for t in first["items"] + rest["items"]]
    assert keys == sorted(keys) and len(set(keys)) == 3
    events = await h.events()
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)


async def test_queue_and_expert_state(h: Harness) -> None:
    await h.presence("alice", "available")
    r = await h.client.get("/api/v1/experts/alice/state", headers=h.rep)
    assert r.json()["presence"] == "available"
    await h.create()
    await h.create(entry_point="+18005550200")
    q = (await h.client.get("/api/v1/queues/support/state", headers=h.rc)).json()
    assert q["waiting"] == 1 and q["eligible_experts"] == 1 and q["available_experts"] == 0
    assert (await h.client.get("/api/v1/queues/none/state", headers=h.rc)).status_code == 404


async def test_live_event_stream_over_a_real_socket(h: Harness) -> None:
    """Server-Sent Events through uvicorn: new events arrive live, resumable by id."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(h.app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    serving = asyncio.create_task(server.serve())
    try:
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:

            async def up() -> bool:
                return (await client.get("/healthz")).status_code == 200

            await async_eventually(up)
            seen: list[tuple[int, str]] = []

            async def listen() -> None:
                async with client.stream("GET", "/api/v1/events/stream", headers=h.rc) as resp:
                    assert resp.headers["content-type"].startswith("text/event-stream")
                    event_id = 0
                    async for line in resp.aiter_lines():
                        if line.startswith("id: "):
                            event_id = int(line[4:])
                        elif line.startswith("event: "):
                            seen.append((event_id, line[7:]))
                            if line[7:] == "task.queued":
                                return

            listener = asyncio.create_task(listen())
            await asyncio.sleep(0.2)
            assert not listener.done()
            created = (await h.create()).json()
            await asyncio.wait_for(listener, timeout=10)
            assert [t for _, t in seen][:2] == ["task.created", "task.queued"]
            ids = [i for i, _ in seen]
            assert ids == sorted(ids)

            async def resume() -> list[str]:
                types: list[str] = []
                headers = {**h.rc, "Last-Event-ID": str(ids[0])}
                async with client.stream("GET", "/api/v1/events/stream", headers=headers) as r:
                    async for line in r.aiter_lines():
                        if line.startswith("event: "):
                            types.append(line[7:])
                            return types
                return types

            assert await asyncio.wait_for(resume(), timeout=10) == ["task.queued"]
            assert created["status"] == "queued"
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, timeout=10)


async def test_a_body_over_the_limit_is_refused_with_413_and_changes_nothing(h: Harness) -> None:
    padding = "x" * MAX_BODY
    big = {"entry_point": "+18005550100", "attributes": {"note": padding}}
    r = await h.client.post("/api/v1/tasks", json=big, headers=h.rc)  # with its length
    assert r.status_code == 413, r.text
    assert r.json()["error"]["code"] == "too_large"

    async def chunks() -> Any:  # no length: refused while it arrives
        yield b'{"entry_point": "+18005550100", "attributes": {"note": "'
        for _ in range(MAX_BODY // 65536 + 1):
            yield b"x" * 65536
        yield b'"}}'

    headers = {**h.rc, "content-type": "application/json"}
    r = await h.client.post("/api/v1/tasks", content=chunks(), headers=headers)
    assert r.status_code == 413, r.text
    with h.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(runtime_tasks)).scalar() == 0
    assert (await h.create()).status_code == 201  # a normal request right after
    assert body_limit("/api/v1/config") > body_limit("/api/v1/tasks") == MAX_BODY


async def test_an_accept_on_a_number_the_expert_may_not_ask_for_is_refused(h: Harness) -> None:
    """In proxy mode the call would go to whatever host the answer names: only the expert's
    numbers (or the queue's accept_phones) are taken; the refusal changes nothing."""
    task_id, alice_offer, _ = await _two_offers(h)
    for phone in ("sip:attacker.example.net:5060", "+447700900123"):
        r = await h.answer(alice_offer, "accept", phone=phone)
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["message"] == (
            f"offer {alice_offer['id']} cannot be taken on {phone!r}: it is not one of expert "
            "'alice''s numbers (phone, phones) and the queue's accept_phones does not allow "
            "it; the offer is still open"
        )
        assert error["details"][0]["path"] == "phone"
    assert (await h.task(task_id))["status"] == "offered"
    assert [o["id"] for o in await h.open_offers("alice")] == [alice_offer["id"]]
    assert await h.events(type="offer.accepted") == []
    r = await h.answer(alice_offer, "accept", phone="+1-555-987-6543")  # one of her phones
    assert r.status_code == 200, r.text
    assert (await h.task(task_id))["label"] == "+15559876543"
