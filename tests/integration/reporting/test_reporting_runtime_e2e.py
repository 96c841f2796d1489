"""Through the real runtime: three handled and one abandoned task end up in the reports."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

from expertline.config.store import apply_document
from expertline.config.validate import load_yaml
from expertline.health import Health
from expertline.reporting import migrate as reporting_migrate
from expertline.reporting.service import create_reporting
from expertline.runtime.service import create_runtime
from expertline.security.tokens import create_token
from expertline.settings import Settings
from expertline.web.app import AppContext, create_app
from support.wait import async_eventually

CONFIG = """
attributes:
  - {name: billing, type: proficiency}
experts:
  - id: alice
    name: Alice Ng
    im: alice@example.test
    phone: sip:1001@pbx.example.test
    attributes: {billing: 80}
queues:
  - {id: billing, name: Billing, select: "billing >= 50", service_level: 20s}
"""


@pytest.fixture
async def api(engine: Engine, db_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    reporting_migrate.upgrade(engine)
    apply_document(engine, load_yaml(CONFIG), "test")
    ctx = AppContext(Settings(db=db_url, data_dir=tmp_path, node="e2e"), engine)
    ctx.services.health = Health()
    runtime = create_runtime(ctx)
    ctx.services.runtime = runtime
    reporting = create_reporting(ctx)
    reporting.poll_interval = 0.05
    ctx.services.reporting = reporting
    await runtime.async_start()
    await reporting.async_start()
    token = create_token(engine, "ops", "admin")
    transport = httpx.ASGITransport(app=create_app(ctx))
    try:
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://expertline.test",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        ) as client:
            yield client
    finally:
        await reporting.async_stop()
        await runtime.async_stop()


async def ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code < 300, response.text
    return dict(response.json())


async def test_handled_and_abandoned_tasks_reach_the_reports(api: httpx.AsyncClient) -> None:
    await ok(await api.put("/api/v1/experts/alice/presence", json={"status": "available"}))
    for _ in range(3):
        task = await ok(
            await api.post("/api/v1/tasks", json={"queue": "billing", "channel": "voice"})
        )

        async def offer(task_id: str = task["id"]) -> list[dict[str, Any]]:
            body = await ok(await api.get("/api/v1/offers?expert=alice&status=open"))
            return [o for o in body["items"] if o["task_id"] == task_id]

        (o,) = await async_eventually(offer)
        await ok(await api.post(f"/api/v1/offers/{o['id']}/accept"))
        await ok(await api.post(f"/api/v1/tasks/{task['id']}/events", json={"type": "connected"}))
        await ok(await api.post(f"/api/v1/tasks/{task['id']}/events", json={"type": "ended"}))
    await ok(await api.put("/api/v1/experts/alice/presence", json={"status": "away"}))
    gone = await ok(await api.post("/api/v1/tasks", json={"queue": "billing", "channel": "voice"}))
    await ok(await api.post(f"/api/v1/tasks/{gone['id']}/events", json={"type": "abandoned"}))

    now = datetime.now(UTC)
    rng = {
        "from": (now - timedelta(hours=1)).isoformat(),
        "to": (now + timedelta(hours=1)).isoformat(),
        "interval": "60m",
    }

    async def queue_rows() -> list[dict[str, Any]]:
        items = (await ok(await api.get("/api/v1/reports/queues", params=rng)))["items"]
        return items if sum(r["offered"] for r in items) == 4 else []

    rows = await async_eventually(queue_rows, timeout=20)
    totals = {k: sum(r[k] for r in rows) for k in ("offered", "handled", "abandoned")}
    assert totals == {"offered": 4, "handled": 3, "abandoned": 1}
    assert {r["queue_name"] for r in rows} == {"Billing"}
    experts = (await ok(await api.get("/api/v1/reports/experts", params=rng)))["items"]
    alice = next(e for e in experts if e["expert_id"] == "alice")
    assert (alice["expert_name"], alice["accepted"], alice["handled"]) == ("Alice Ng", 3, 3)
    # Her state changes streamed in too: ready time before the offers, busy time on calls.
    assert alice["available_time"] > 0 and alice["busy_time"] > 0
    tasks = (await ok(await api.get("/api/v1/reports/tasks", params=rng)))["items"]
    assert sorted(t["status"] for t in tasks) == [
        "abandoned",
        "completed",
        "completed",
        "completed",
    ]
    assert {t["call_disposition"] for t in tasks if t["status"] == "completed"} == {13}
