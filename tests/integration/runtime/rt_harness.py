"""Helpers for runtime tests: a small routing configuration and an HTTP client harness."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import httpx
from sqlalchemy import Engine

from expertline.config.schema import ConfigDocument
from expertline.config.store import apply_document
from expertline.routing.model import ExpertSpec, OnMaxWait, QueueSpec, RoutingConfig
from expertline.runtime.service import RuntimeService
from expertline.security.tokens import create_token

PHONES = {
    "alice": "sip:1001@pbx.example.test",
    "bob": "sip:1002@pbx.example.test",
    "carol": "sip:1003@pbx.example.test",
}
OTHER_PHONES = {"alice": ("+15559876543",), "bob": ("+15559999",)}  # ``phones``


def routing_config(
    version: int = 1, offer_timeout: float = 20.0, **queue_options: Any
) -> RoutingConfig:
    """Two queues: ``billing`` broadcasts to alice and bob; ``support`` offers to carol."""
    experts = {
        eid: ExpertSpec(
            id=eid,
            name=eid.title(),
            phone=phone,
            im=f"{eid}@example.test",
            phones=OTHER_PHONES.get(eid, ()),
        )
        for eid, phone in PHONES.items()
    }
    billing = QueueSpec(
        id="billing",
        name="Billing",
        offer_to=2,
        offer_timeout=offer_timeout,
        max_wait=300.0,
        on_max_wait=OnMaxWait("reject"),
        **queue_options,
    )
    support = QueueSpec(id="support", name="Support", offer_to=1, offer_timeout=offer_timeout)
    return RoutingConfig(
        version=version,
        experts=experts,
        queues={"billing": billing, "support": support},
        matches={
            "billing": (frozenset({"alice", "bob"}),),
            "support": (frozenset({"carol"}),),
        },
        entry_points={"+18005550100": "billing", "+18005550200": "support"},
    )


def store_experts(engine: Engine) -> None:
    """The experts of ``routing_config`` in the stored configuration (tokens name them)."""
    doc = ConfigDocument.model_validate(
        {"experts": [{"id": e, "name": e.title(), "phone": p} for e, p in PHONES.items()]}
    )
    apply_document(engine, doc, actor="test")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def expert_headers(engine: Engine) -> dict[str, dict[str, str]]:
    """An ``expert`` token bound to each expert of ``routing_config``."""
    return {e: bearer(create_token(engine, f"xp-{e}", "expert", e)) for e in PHONES}


@dataclass
class Harness:
    service: RuntimeService
    client: httpx.AsyncClient
    engine: Engine
    rc: dict[str, str]  # routing-client auth header
    xp: dict[str, dict[str, str]]  # auth header of each expert's own token
    rep: dict[str, str]  # reporting auth header
    app: Any = None
    admin: dict[str, str] | None = None

    async def create(self, **body: Any) -> httpx.Response:
        body.setdefault("entry_point", "+18005550100")
        return await self.client.post("/api/v1/tasks", json=body, headers=self.rc)

    def as_expert(self, expert: str) -> dict[str, str]:
        """The expert's own token; an admin's for an expert the configuration lacks."""
        return self.xp.get(expert) or self.admin or {}

    async def answer(self, offer: dict[str, Any], verb: str, **body: Any) -> httpx.Response:
        """Accept or decline ``offer`` with its own expert's token."""
        return await self.client.post(
            f"/api/v1/offers/{offer['id']}/{verb}",
            json=body or None,
            headers=self.xp[offer["expert"]],
        )

    async def presence(self, expert: str, status: str) -> httpx.Response:
        return await self.client.put(
            f"/api/v1/experts/{expert}/presence",
            json={"status": status},
            headers=self.as_expert(expert),
        )

    async def open_offers(self, expert: str) -> list[dict[str, Any]]:
        r = await self.client.get(
            f"/api/v1/offers?expert={expert}&status=open", headers=self.as_expert(expert)
        )
        assert r.status_code == 200, r.text
        return list(r.json()["items"])

    async def task(self, task_id: str) -> dict[str, Any]:
        r = await self.client.get(f"/api/v1/tasks/{task_id}", headers=self.rc)
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def event(self, task_id: str, type: str, **extra: Any) -> httpx.Response:
        return await self.client.post(
            f"/api/v1/tasks/{task_id}/events", json={"type": type, **extra}, headers=self.rc
        )

    async def records(self, kind: str) -> list[dict[str, Any]]:
        r = await self.client.get(f"/api/v1/records/{kind}?limit=1000", headers=self.rc)
        assert r.status_code == 200, r.text
        return list(r.json()["items"])

    async def events(self, **params: Any) -> list[dict[str, Any]]:
        r = await self.client.get(
            "/api/v1/events", params={"limit": 1000, **params}, headers=self.rc
        )
        assert r.status_code == 200, r.text
        return list(r.json()["items"])


class FakeClock:
    """The runtime's clock (a callable returning seconds), standing still until a test sets
    ``now``."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_service(engine: Engine, config: RoutingConfig, **options: Any) -> RuntimeService:
    return RuntimeService(
        engine,
        node="test-node",
        config_loader=lambda _e: (config, None),
        version_probe=lambda _e: config.version,
        **options,
    )


def polling_service(engine: Engine, configs: dict[str, RoutingConfig]) -> RuntimeService:
    """A runtime that polls ``configs["current"]`` every 50 ms: a test hands it a new
    configuration version by replacing that entry."""
    return RuntimeService(
        engine,
        node="test-node",
        config_loader=lambda _e: (configs["current"], None),
        version_probe=lambda _e: configs["current"].version,
        config_poll=0.05,
    )


def without_queue(config: RoutingConfig, queue: str, version: int) -> RoutingConfig:
    """``config`` as version ``version``, with ``queue`` and its matches removed."""
    queues = {k: v for k, v in config.queues.items() if k != queue}
    matches = {k: v for k, v in config.matches.items() if k != queue}
    return replace(config, version=version, queues=queues, matches=matches)
