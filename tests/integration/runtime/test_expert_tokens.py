"""An ``expert`` token acts for the one expert it is bound to; ``admin`` acts for anyone;
``supervisor`` reads live state and changes nothing. The hot routes (accept, decline) apply
the same rule as the FastAPI routes behind them."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
from rt_harness import Harness, bearer
from sqlalchemy import insert

from expertline.db.tables import api_tokens
from expertline.security.tokens import create_token, hash_token
from expertline.web.app import create_app
from expertline.web.hot import HotRoutes


async def _offers_to_alice_and_bob(h: Harness) -> tuple[dict, dict]:  # type: ignore[type-arg]
    for expert in ("alice", "bob"):
        assert (await h.presence(expert, "available")).status_code == 200
    assert (await h.create(caller="+15551234567")).status_code == 201
    return (await h.open_offers("alice"))[0], (await h.open_offers("bob"))[0]


async def test_an_expert_token_acts_for_its_own_expert_only(h: Harness) -> None:
    alice_offer, bob_offer = await _offers_to_alice_and_bob(h)
    alice = h.xp["alice"]
    plain_app = create_app(h.app.state.ctx)
    plain_app.hot_routes = HotRoutes()
    transport = httpx.ASGITransport(app=plain_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://expertline.test") as plain:
        for client in (h.client, plain):  # hot routes, then FastAPI's alone
            for verb in ("accept", "decline"):
                r = await client.post(f"/api/v1/offers/{bob_offer['id']}/{verb}", headers=alice)
                assert r.status_code == 403, r.text
                assert r.json()["error"]["message"] == (
                    "this token acts for expert 'alice' only, not for 'bob'"
                )
    r = await h.client.put("/api/v1/experts/bob/presence", json={"status": "away"}, headers=alice)
    assert r.status_code == 403 and "not for 'bob'" in r.text
    r = await h.client.get("/api/v1/offers?expert=bob", headers=alice)
    assert r.status_code == 403 and "not for 'bob'" in r.text

    # Nothing changed: bob is still available with his offer open.
    assert h.service.expert_state("bob")["presence"] == "available"  # type: ignore[index]
    assert [o["id"] for o in await h.open_offers("bob")] == [bob_offer["id"]]
    # Their own: fine.
    assert (await h.answer(bob_offer, "decline")).status_code == 200
    assert (await h.answer(alice_offer, "accept")).status_code == 200


async def test_an_admin_token_acts_for_any_expert(h: Harness) -> None:
    _, bob_offer = await _offers_to_alice_and_bob(h)
    r = await h.client.get("/api/v1/offers?expert=bob", headers=h.admin)
    assert [o["id"] for o in r.json()["items"]] == [bob_offer["id"]]
    r = await h.client.post(f"/api/v1/offers/{bob_offer['id']}/accept", headers=h.admin)
    assert r.status_code == 200 and r.json()["expert"] == "bob"
    r = await h.client.put(
        "/api/v1/experts/alice/presence", json={"status": "away"}, headers=h.admin
    )
    assert r.status_code == 200 and r.json()["presence"] == "away"


async def test_an_expert_token_made_before_binding_is_refused_with_the_way_out(
    h: Harness,
) -> None:
    """A token of an earlier release (no expert) may no longer act for anyone."""
    _, bob_offer = await _offers_to_alice_and_bob(h)
    legacy = "elt_made-by-an-earlier-release"
    with h.engine.begin() as conn:
        conn.execute(
            insert(api_tokens).values(
                name="console",
                role="expert",
                token_hash=hash_token(legacy),
                created_at=datetime.now(UTC),
            )
        )
    old = bearer(legacy)
    for r in (
        await h.client.put("/api/v1/experts/bob/presence", json={"status": "away"}, headers=old),
        await h.client.get("/api/v1/offers?expert=bob", headers=old),
        await h.client.post(f"/api/v1/offers/{bob_offer['id']}/accept", headers=old),
        await h.client.post(f"/api/v1/offers/{bob_offer['id']}/decline", headers=old),
    ):
        assert r.status_code == 403, r.text
        message = r.json()["error"]["message"]
        assert "bound to no expert" in message
        assert "expertline tokens create NAME --role expert --expert EXPERT_ID" in message
    assert [o["id"] for o in await h.open_offers("bob")] == [bob_offer["id"]]


async def test_a_supervisor_sees_live_state_and_changes_nothing(h: Harness) -> None:
    alice_offer, _ = await _offers_to_alice_and_bob(h)
    sup = bearer(create_token(h.engine, "floor", "supervisor"))
    assert (await h.client.get("/api/v1/experts/alice/state", headers=sup)).status_code == 200
    assert (await h.client.get("/api/v1/queues/billing/state", headers=sup)).status_code == 200
    task = (await h.client.get(f"/api/v1/tasks/{alice_offer['task_id']}", headers=sup)).json()
    assert task["status"] == "offered"
    for method, url, body in (
        ("POST", "/api/v1/tasks", {"queue": "billing"}),
        ("POST", f"/api/v1/tasks/{task['id']}/events", {"type": "abandoned"}),
        ("PUT", "/api/v1/experts/alice/presence", {"status": "away"}),
        ("GET", "/api/v1/offers?expert=alice", None),
        ("POST", f"/api/v1/offers/{alice_offer['id']}/accept", None),
        ("POST", f"/api/v1/offers/{alice_offer['id']}/decline", None),
    ):
        r = await h.client.request(method, url, json=body, headers=sup)
        assert r.status_code == 403, (url, r.text)
        assert "role 'supervisor' may not call this endpoint" in r.text
    assert (await h.task(task["id"]))["status"] == "offered"
