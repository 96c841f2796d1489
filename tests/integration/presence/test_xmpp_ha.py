"""An HA pair with real IM: two ``expertline serve`` nodes on PostgreSQL, both signed in to a
real Prosody as the router. The active node offers a task by IM and is killed; the standby
takes over, tells the expert that routing moved, and the expert's ``yes`` reaches it."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest

from expertline.db.engine import make_engine
from expertline.security.tokens import create_token
from support.databases import postgres_database
from support.processes import cli, running_server
from support.prosody import ProsodyServer
from support.wait import async_eventually
from support.xmpp_clients import ExpertClient

pytestmark = [pytest.mark.prosody, pytest.mark.postgres]


def _config(server: ProsodyServer) -> str:
    return textwrap.dedent(
        f"""
        experts:
          - {{id: alice, name: Alice, im: alice@{server.domain}, phone: "sip:1001@pbx.example.test"}}
        queues:
          - {{id: billing, name: Billing, select: "true", offer_timeout: 1h}}
        presence:
          - id: corp-xmpp
            kind: xmpp
            jid: router@{server.domain}
            password_env: EXPERTLINE_TEST_XMPP_PASSWORD
            host: 127.0.0.1
            port: {server.c2s_port}
        """
    )


async def test_an_im_offer_survives_a_failover_and_is_accepted_on_the_new_node(
    prosody: ProsodyServer, tmp_path: Path
) -> None:
    prosody.register("alice", "alice-pw")
    with postgres_database() as url:
        cli("--db", url, "db", "upgrade", check=True)
        (tmp_path / "config.yaml").write_text(_config(prosody))
        cli("--db", url, "config", "import", str(tmp_path / "config.yaml"), check=True)
        engine = make_engine(url)
        token = create_token(engine, "cc", "admin")
        engine.dispose()
        env = {
            "EXPERTLINE_DB": url,
            "EXPERTLINE_HA_LEASE_TTL": "2",
            "EXPERTLINE_HA_POLL": "0.1",
            "EXPERTLINE_TEST_XMPP_PASSWORD": "router-pw",
        }
        with (
            running_server(tmp_path, "--role", "runtime", "--node", "a", env=env) as a,
            running_server(tmp_path, "--role", "runtime", "--node", "b", env=env) as b,
        ):
            headers = {"Authorization": f"Bearer {token}"}
            api_a = httpx.AsyncClient(base_url=a.base_url, headers=headers, timeout=10)
            api_b = httpx.AsyncClient(base_url=b.base_url, headers=headers, timeout=10)
            alice = ExpertClient(
                f"alice@{prosody.domain}", "alice-pw", "127.0.0.1", prosody.c2s_port
            )
            await alice.connect()
            try:

                async def available_on(api: httpx.AsyncClient) -> bool:
                    r = await api.get("/api/v1/experts/alice/state")
                    return r.status_code == 200 and r.json()["presence"] == "available"

                await async_eventually(lambda: available_on(api_a), timeout=20)
                task: dict[str, Any] = (
                    await api_a.post("/api/v1/tasks", json={"queue": "billing"})
                ).json()
                await alice.wait_for(rf"^Offer #{task['code']}", timeout=10)

                a.proc.kill()
                a.proc.wait(timeout=10)

                async def b_ready() -> bool:
                    return (await api_b.get("/readyz")).status_code == 200

                await async_eventually(b_ready, timeout=30)
                await alice.wait_for(r"^Routing moved to the backup node", timeout=10)
                alice.say(f"router@{prosody.domain}", f"yes {task['code']}")

                async def assigned() -> bool:
                    view = (await api_b.get(f"/api/v1/tasks/{task['id']}")).json()
                    return bool(view["status"] == "assigned" and view["expert"] == "alice")

                await async_eventually(assigned, timeout=10)
                await alice.wait_for(rf"^Accepted #{task['code']}", timeout=10)
            finally:
                await alice.disconnect()
                await api_a.aclose()
                await api_b.aclose()
