"""End to end with the real runtime: REST task -> IM offer -> ``yes`` -> label -> TCD 13.

Prosody or ejabberd, the routing runtime (real database), the HTTP API, and scripted expert clients. The
presence source is built from a configuration document the way a node builds it.
"""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

from expertline.config.schema import ConfigDocument
from expertline.config.validate import load_yaml
from expertline.health import Health
from expertline.presence.service import create_presence_sources
from expertline.presence.xmpp import XmppSource
from expertline.routing.model import ExpertSpec, OnMaxWait, QueueSpec, RoutingConfig
from expertline.runtime.service import RuntimeService
from expertline.security.tokens import create_token
from expertline.settings import Settings
from expertline.web.app import AppContext, create_app
from support.wait import async_eventually
from support.xmpp_clients import ExpertClient, XmppServer

pytestmark = pytest.mark.prosody

EXPERTS = ("alice", "bob", "carol")
PHONES = {e: f"sip:{1001 + i}@pbx.example.test" for i, e in enumerate(EXPERTS)}


def documents(server: XmppServer, offer_to: int = 3) -> tuple[RoutingConfig, ConfigDocument]:
    experts_yaml = "\n".join(
        f"  - {{id: {e}, name: {e.title()}, im: {e}@{server.domain}, phone: '{PHONES[e]}'}}"
        for e in EXPERTS
    )
    doc = load_yaml(
        textwrap.dedent(
            """
            experts:
            {experts}
            queues:
              - id: billing
                name: Billing
                select: "true"
                offer_to: {offer_to}
                decline_cooldown: 60s
                show: {{caller: masked}}
                accept_phones: '\\+1555\\d{{7}}'
            entry_points:
              - {{dialed_number: "+18005550100", queue: billing}}
            presence:
              - id: corp-xmpp
                kind: xmpp
                jid: router@{domain}
                password_env: EXPERTLINE_TEST_XMPP_PASSWORD
                host: 127.0.0.1
                port: {port}
            """
        ).format(
            experts=experts_yaml, offer_to=offer_to, domain=server.domain, port=server.c2s_port
        )
    )
    config = RoutingConfig(
        version=1,
        experts={
            e: ExpertSpec(id=e, name=e.title(), phone=PHONES[e], im=f"{e}@{server.domain}")
            for e in EXPERTS
        },
        queues={
            "billing": QueueSpec(
                id="billing",
                name="Billing",
                offer_to=offer_to,
                offer_timeout=20.0,
                max_wait=60.0,
                decline_cooldown=60.0,
                on_max_wait=OnMaxWait("reject"),
                accept_phones=r"\+1555\d{7}",
            )
        },
        matches={"billing": (frozenset(EXPERTS),)},
        entry_points={"+18005550100": "billing"},
    )
    return config, doc


@dataclass
class System:
    server: XmppServer
    service: RuntimeService
    source: XmppSource
    health: Health
    http: httpx.AsyncClient
    rc: dict[str, str]
    clients: dict[str, ExpertClient] = field(default_factory=dict)

    async def sign_in(self, expert: str, **kw: Any) -> ExpertClient:
        client = ExpertClient(
            jid=f"{expert}@{self.server.domain}",
            password=f"{expert}-pw",
            host="127.0.0.1",
            port=self.server.c2s_port,
            **kw,
        )
        await client.connect()
        old = self.clients.get(expert)
        if old is not None:
            await old.disconnect()
        self.clients[expert] = client
        return client

    def presence(self, expert: str) -> str:
        state = self.service.expert_state(expert)
        return state["presence"] if state else "unknown"

    async def create_task(self) -> dict[str, Any]:
        r = await self.http.post(
            "/api/v1/tasks",
            json={"entry_point": "+18005550100", "caller": "+15551234567"},
            headers=self.rc,
        )
        assert r.status_code == 201, r.text
        return dict(r.json())

    async def task(self, task_id: str) -> dict[str, Any]:
        r = await self.http.get(f"/api/v1/tasks/{task_id}", headers=self.rc)
        assert r.status_code == 200, r.text
        return dict(r.json())


@pytest.fixture
async def system(
    xmpp_server: XmppServer, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[System]:
    for expert in EXPERTS:
        xmpp_server.register(expert, f"{expert}-pw")
    monkeypatch.setenv("EXPERTLINE_TEST_XMPP_PASSWORD", "router-pw")
    config, doc = documents(xmpp_server)
    ctx = AppContext(Settings(node="test-node"), engine)
    health = ctx.services.health = Health()
    service = RuntimeService(
        engine,
        node="test-node",
        config_loader=lambda _e: (config, doc),
        version_probe=lambda _e: config.version,
    )
    ctx.services.runtime = service
    (source,) = create_presence_sources(ctx, service, document=doc)
    ctx.services.presence_sources = [source]
    await service.async_start()
    await source.async_start()
    rc = {"Authorization": f"Bearer {create_token(engine, 'rc', 'routing-client')}"}
    http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(ctx)), base_url="http://expertline.test"
    )
    system = System(xmpp_server, service, source, health, http, rc)
    try:
        yield system
    finally:
        for client in system.clients.values():
            await client.disconnect()
        await http.aclose()
        await source.async_stop()
        await service.async_stop()


async def test_broadcast_goes_to_the_accepter_with_its_label_and_ends_with_tcd_13(
    system: System,
) -> None:
    alice = await system.sign_in("alice", behaviour="accept", answer_after=1.0)
    bob = await system.sign_in("bob", behaviour="decline")
    carol = await system.sign_in("carol", behaviour="ignore")
    await async_eventually(
        lambda: all(system.presence(e) == "available" for e in EXPERTS), timeout=15
    )
    task = await system.create_task()
    code = task["code"]
    for client in (alice, bob, carol):
        offer = await client.wait_for(rf"^Offer #{code}:")
        assert "****4567" in offer.body and "+15551234567" not in offer.body  # show: masked
    await bob.wait_for(rf"^Declined #{code}")
    await alice.wait_for(rf"^Accepted #{code}:")
    await carol.wait_for(rf"^Withdrawn #{code}: another expert took it")
    assigned = await system.task(task["id"])
    assert assigned["status"] == "assigned"
    assert assigned["expert"] == "alice" and assigned["label"] == PHONES["alice"]
    for event in ("connected", "ended"):
        r = await system.http.post(
            f"/api/v1/tasks/{task['id']}/events", json={"type": event}, headers=system.rc
        )
        assert r.status_code == 200, r.text
    r = await system.http.get("/api/v1/records/tcd?limit=10", headers=system.rc)
    (tcd,) = r.json()["items"]
    assert tcd["call_disposition"] == 13 and tcd["expert_id"] == "alice"
    assert bob.bodies() == [bob.received[0].body, f"Declined #{code}. Thank you."]  # not again


async def test_another_number_and_going_away_mid_offer(system: System) -> None:
    carol = await system.sign_in("carol")
    await async_eventually(lambda: system.presence("carol") == "available", timeout=15)
    task = await system.create_task()
    await carol.wait_for(rf"^Offer #{task['code']}:")
    carol.set_show("away")  # mid-offer: the offer is withdrawn
    await carol.wait_for(rf"^Withdrawn #{task['code']}: your status is no longer available")
    assert system.presence("carol") == "away"
    alice = await system.sign_in("alice", behaviour="accept", phone="+15557654321")
    await alice.wait_for(rf"^Offer #{task['code']}:", timeout=15)
    await alice.wait_for(rf"^Accepted #{task['code']}:")
    assigned = await system.task(task["id"])
    assert assigned["expert"] == "alice" and assigned["label"] == "+15557654321"


async def test_a_number_outside_the_experts_and_the_queues_is_refused(system: System) -> None:
    """``yes CODE sip:host`` may not send the caller anywhere: a clear line, the offer stays
    open, and the expert can still take it on a number the queue allows."""
    alice = await system.sign_in("alice")
    await async_eventually(lambda: system.presence("alice") == "available", timeout=15)
    task = await system.create_task()
    code = task["code"]
    offer = await alice.wait_for(rf"^Offer #{code}:")
    alice.say(offer.sender, f"yes {code} sip:attacker.example.net:5060")
    await alice.wait_for(
        rf"^#{code} cannot go to sip:attacker.example.net:5060: it is not one of your numbers\."
    )
    assert (await system.task(task["id"]))["status"] == "offered"
    assert [o.code for o in system.service.open_offers("alice")] == [code]
    alice.say(offer.sender, f"yes {code} +1-555-765-4321")  # matches the queue's accept_phones
    await alice.wait_for(rf"^Accepted #{code}:")
    assigned = await system.task(task["id"])
    assert assigned["expert"] == "alice" and assigned["label"] == "+15557654321"


async def test_link_cut_sets_experts_offline_shows_down_and_recovers(system: System) -> None:
    await system.sign_in("bob")
    await async_eventually(lambda: system.presence("bob") == "available", timeout=15)
    r = await system.http.get("/readyz")
    assert r.json()["components"]["presence:corp-xmpp"]["up"] is True
    metrics = (await system.http.get("/metrics")).text
    assert 'expertline_presence_link_up{source="corp-xmpp"} 1.0' in metrics
    assert 'expertline_presence_link_state{source="corp-xmpp",state="online"} 1.0' in metrics
    system.server.stop()
    await async_eventually(lambda: system.presence("bob") == "offline", timeout=10)
    r = await system.http.get("/readyz")
    assert r.status_code == 503
    assert r.json()["components"]["presence:corp-xmpp"]["up"] is False
    metrics = (await system.http.get("/metrics")).text
    assert 'expertline_component_up{component="presence:corp-xmpp"} 0.0' in metrics
    assert 'expertline_presence_link_up{source="corp-xmpp"} 0.0' in metrics
    assert 'expertline_presence_link_state{source="corp-xmpp",state="online"} 0.0' in metrics
    task = await system.create_task()  # nobody available: no offer goes out
    system.server.start()
    bob = await system.sign_in("bob")
    await async_eventually(lambda: system.presence("bob") == "available", timeout=15)
    await bob.wait_for(rf"^Offer #{task['code']}:")  # the waiting task reaches him now
    r = await system.http.get("/readyz")
    assert r.json()["components"]["presence:corp-xmpp"]["up"] is True
