"""The queue's ``show`` rules apply to every view an expert gets of an offer: the REST offer
list, the accept answer, the task read with an expert token, as in the IM text."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from rt_harness import bearer
from sqlalchemy import Engine

from expertline.config.store import apply_document
from expertline.config.validate import load_yaml
from expertline.eligibility.build import build_routing_config
from expertline.runtime.service import RuntimeService
from expertline.security.tokens import create_token
from expertline.settings import Settings
from expertline.web.app import AppContext, create_app

CONFIG = textwrap.dedent(
    """
    experts:
      - {id: alice, name: Alice, phone: "sip:1001@pbx.example.test"}
    queues:
      - {id: hidden, name: Hidden, select: "true",
         show: {caller: hidden, account: masked, tier: visible}}
      - {id: masked, name: Masked, select: "true", show: {caller: masked}}
      - {id: plain, name: Plain, select: "true"}
    """
)
CALLER = "+15551234567"
ATTRIBUTES = {"account": "AC-99887766", "notes": "angry about the bill", "tier": 2}


@pytest.fixture
async def api(engine: Engine) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, dict[str, str]]]]:
    doc = load_yaml(CONFIG)
    apply_document(engine, doc, actor="test")
    config = build_routing_config(doc, version=1)
    service = RuntimeService(  # the document carries the show rules
        engine, config_loader=lambda _e: (config, doc), version_probe=lambda _e: 1
    )
    await service.async_start()
    ctx = AppContext(Settings(node="test-node"), engine)
    ctx.services.runtime = service
    tokens = {
        "rc": bearer(create_token(engine, "rc", "routing-client")),
        "alice": bearer(create_token(engine, "alice", "expert", "alice")),
    }
    transport = httpx.ASGITransport(app=create_app(ctx))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://expertline.test") as c:
            yield c, tokens
    finally:
        await service.async_stop()


async def _offer(c: httpx.AsyncClient, t: dict[str, dict[str, str]], queue: str) -> Any:
    r = await c.post(
        "/api/v1/tasks",
        json={"queue": queue, "caller": CALLER, "attributes": ATTRIBUTES},
        headers=t["rc"],
    )
    assert r.status_code == 201, r.text
    r = await c.get("/api/v1/offers?expert=alice", headers=t["alice"])
    (offer,) = [o for o in r.json()["items"] if o["queue"] == queue]
    return offer


async def test_every_expert_view_of_an_offer_applies_the_queues_show_rules(api: Any) -> None:
    c, t = api
    r = await c.put(
        "/api/v1/experts/alice/presence", json={"status": "available"}, headers=t["alice"]
    )
    assert r.status_code == 200

    offer = await _offer(c, t, "hidden")
    assert offer["caller"] is None
    assert offer["attributes"] == {"account": "****7766", "tier": "2"}  # notes: unlisted
    assert CALLER not in str(offer) and "angry" not in str(offer)
    task = await c.get(f"/api/v1/tasks/{offer['task_id']}", headers=t["alice"])
    assert task.status_code == 200 and task.json()["caller"] is None
    accepted = await c.post(f"/api/v1/offers/{offer['id']}/accept", headers=t["alice"])
    assert accepted.status_code == 200
    assert accepted.json()["caller"] is None and accepted.json()["attributes"]["tier"] == "2"
    # The routing client still sees its own caller.
    theirs = await c.get(f"/api/v1/tasks/{offer['task_id']}", headers=t["rc"])
    assert theirs.json()["caller"] == CALLER
    await c.post(
        f"/api/v1/tasks/{offer['task_id']}/events", json={"type": "ended"}, headers=t["rc"]
    )

    masked = await _offer(c, t, "masked")
    assert masked["caller"] == "****4567" and masked["attributes"] == {}
    task = await c.get(f"/api/v1/tasks/{masked['task_id']}", headers=t["alice"])
    assert task.json()["caller"] == "****4567"
    await c.post(
        f"/api/v1/tasks/{masked['task_id']}/events", json={"type": "abandoned"}, headers=t["rc"]
    )

    plain = await _offer(c, t, "plain")
    assert plain["caller"] == CALLER  # the caller is shown unless the queue says otherwise
