"""Schemathesis over ``/openapi.json`` against a real node, with every role's token, on SQLite
and PostgreSQL: no 5xx, every answer as documented (status, content type, headers, schema),
and the node still routes a task end to end afterwards.

Bounded in time (``EXPERTLINE_FUZZ_SECONDS`` per role, 8 by default: about a minute per
database with the node's start). Deselect locally with ``-m "not fuzz"``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from expertline.config.store import apply_document
from expertline.config.validate import load_yaml
from expertline.db import migrate
from expertline.db.engine import make_engine
from expertline.reporting import migrate as reporting_migrate
from expertline.security.tokens import create_token
from support.databases import postgres_database, sqlite_url
from support.processes import running_server
from support.wait import eventually

pytestmark = pytest.mark.fuzz

ROLES = ("admin", "routing-client", "expert", "reporting", "supervisor")
SECONDS = int(os.environ.get("EXPERTLINE_FUZZ_SECONDS", "8"))
# What a generated request must never get. Left out: positive_data_acceptance (the schema
# cannot say that a queue must exist), negative_data_rejection (query strings carry no types),
# ensure_resource_availability (live state follows configuration a moment later).
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "missing_required_header",
    "unsupported_method",
    "allow_header_conformance",
    "ignored_auth",
    "use_after_free",
)
# Tasks end within seconds (a long poll never outlives the run): offers and waits are short.
FUZZ_CONFIG = """
attributes:
  - {name: billing, type: proficiency}
experts:
  - {id: alice, name: Alice, phone: "sip:1001@pbx.example.test", attributes: {billing: 80}}
  - {id: bob, name: Bob, phone: "sip:1002@pbx.example.test", attributes: {billing: 60}}
queues:
  - {id: billing, name: Billing, select: "billing >= 50", offer_timeout: 1s, max_wait: 2s}
entry_points:
  - {dialed_number: "+18005550100", queue: billing}
"""
# Afterwards: a queue and an expert the fuzzing never saw, for the end-to-end check.
AFTER_CONFIG = (
    (
        FUZZ_CONFIG
        + """
  - {dialed_number: "+18005550999", queue: after}
"""
    )
    .replace(
        "queues:\n",
        "queues:\n  - {id: after, name: After, select: 'billing >= 99', offer_timeout: 1h}\n",
    )
    .replace(
        "experts:\n",
        "experts:\n  - {id: zoe, name: Zoe, phone: 'sip:1099@pbx.example.test', "
        "attributes: {billing: 99}}\n",
    )
)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield sqlite_url(tmp_path)
    else:
        with postgres_database() as url:
            yield url


def _schemathesis() -> str:
    found = Path(sys.executable).parent / "schemathesis"
    assert found.exists(), "schemathesis is missing: pip install -e '.[test]'"
    return str(found)


def test_fuzzing_every_role_finds_nothing_and_the_node_still_routes(
    database: str, tmp_path: Path
) -> None:
    env = {"EXPERTLINE_DB": database, "EXPERTLINE_DATA_DIR": str(tmp_path / "data")}
    engine = make_engine(database)  # set up in this process: a CLI process per step is slower
    try:
        migrate.upgrade(engine)
        reporting_migrate.upgrade(engine)
        apply_document(engine, load_yaml(FUZZ_CONFIG), "cli:test", source="import")
        tokens = {
            role: create_token(
                engine, f"fuzz-{role}", role, expert_id="alice" if role == "expert" else None
            )
            for role in ROLES
        }
    finally:
        engine.dispose()
    with running_server(tmp_path, "--no-presence", env=env, ready_path="/readyz") as node:
        for role in ROLES:
            run = subprocess.run(
                [
                    _schemathesis(),
                    "run",
                    f"{node.base_url}/openapi.json",
                    "--header",
                    f"Authorization: Bearer {tokens[role]}",
                    "--checks",
                    ",".join(CHECKS),
                    "--max-time",
                    str(SECONDS),
                    "--request-timeout",
                    "20",
                    "--workers",  # one: hypothesis describes strategies with ast.parse,
                    "1",  # which CPython 3.11 can break across threads
                    "--exclude-path",
                    "/api/v1/events/stream",  # a live stream never ends
                    "--no-color",
                ],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=SECONDS + 120,
                env={**os.environ, "NO_COLOR": "1"},
            )
            assert run.returncode == 0, f"role {role}:\n{run.stdout[-6000:]}\n{run.stderr[-2000:]}"
        assert "Traceback" not in node.log()

        _routes_a_task(node.base_url, tokens, database)


def _routes_a_task(base_url: str, tokens: dict[str, str], database: str) -> None:
    """Apply a known configuration and take a task from creation to its end."""
    http = httpx.Client(base_url=base_url, timeout=30)

    def auth(role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {tokens[role]}"}

    applied = http.put(
        "/api/v1/config",
        content=AFTER_CONFIG,
        headers={**auth("admin"), "content-type": "application/yaml"},
    )
    assert applied.status_code == 200, applied.text
    assert http.get("/readyz").status_code == 200

    def zoe_known() -> bool:
        return http.get("/api/v1/experts/zoe/state", headers=auth("expert")).status_code == 200

    eventually(zoe_known, timeout=20)
    engine = make_engine(database)  # zoe's own token: an expert token acts for its expert only
    try:
        tokens = {**tokens, "expert": create_token(engine, "fuzz-zoe", "expert", expert_id="zoe")}
    finally:
        engine.dispose()
    r = http.put(
        "/api/v1/experts/zoe/presence", json={"status": "available"}, headers=auth("expert")
    )
    assert r.status_code == 200, r.text
    created = http.post(
        "/api/v1/tasks",
        json={"entry_point": "+18005550999", "caller": "+15551234567"},
        headers=auth("routing-client"),
    )
    assert created.status_code == 201, created.text
    task = created.json()

    def offered() -> list[dict[str, object]]:
        r = http.get("/api/v1/offers", params={"expert": "zoe"}, headers=auth("expert"))
        return [o for o in r.json()["items"] if o["task_id"] == task["id"]]

    [offer] = eventually(offered, timeout=20)
    r = http.post(f"/api/v1/offers/{offer['id']}/accept", headers=auth("expert"))
    assert r.status_code == 200, r.text
    for event in ("connected", "ended"):
        r = http.post(
            f"/api/v1/tasks/{task['id']}/events",
            json={"type": event},
            headers=auth("routing-client"),
        )
        assert r.status_code == 200, r.text
    done = http.get(f"/api/v1/tasks/{task['id']}", headers=auth("routing-client")).json()
    assert (done["status"], done["expert"], done["label"]) == (
        "completed",
        "zoe",
        "sip:1099@pbx.example.test",
    )
