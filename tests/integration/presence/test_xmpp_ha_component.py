"""An HA pair in component mode on ejabberd with its shipped flood limit (5 subscription
requests a minute per connection): the active node is killed and the standby, once it has taken
over, shows every online expert's presence within 5 s. Twelve experts whose rosters already hold
the component's subscription, as an earlier approval leaves them: a session that re-subscribed
to each would get 5 through in the first minute; the probes it sends instead are not counted."""

from __future__ import annotations

import asyncio
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from expertline.db.engine import make_engine
from expertline.security.tokens import create_token
from support.databases import postgres_database
from support.ejabberd import EjabberdServer
from support.processes import cli, running_server
from support.wait import async_eventually
from support.xmpp_clients import ExpertClient

pytestmark = [pytest.mark.ejabberd, pytest.mark.postgres]

EXPERTS = {"ann": None, "ben": "away", "cid": None} | {f"e{i:02d}": None for i in range(9)}


def _config(server: EjabberdServer) -> str:
    experts = "\n".join(
        f'  - {{id: {e}, name: {e.title()}, im: {e}@{server.domain}, phone: "sip:{e}@pbx"}}'
        for e in EXPERTS
    )
    return (
        "experts:\n"
        + experts
        + textwrap.dedent(
            f"""
            queues:
              - {{id: billing, name: Billing, select: "true"}}
            presence:
              - id: corp-xmpp
                kind: xmpp
                component: {{jid: {server.component}, secret_env: EXPERTLINE_TEST_XMPP_SECRET,
                             host: 127.0.0.1, port: {server.component_port}}}
            """
        )
    )


@pytest.mark.timeout(180)
async def test_the_standby_shows_every_online_expert_within_5_s_of_taking_over(
    ejabberd: EjabberdServer, tmp_path: Path
) -> None:
    assert ejabberd.pres_counter == {"count": 5, "interval": 60}
    for expert in EXPERTS:
        ejabberd.register(expert, f"{expert}-pw")
        ejabberd.add_roster_item(expert, ejabberd.component, "from")
    with postgres_database() as url:
        cli("--db", url, "db", "upgrade", check=True)
        (tmp_path / "config.yaml").write_text(_config(ejabberd))
        cli("--db", url, "config", "import", str(tmp_path / "config.yaml"), check=True)
        engine = make_engine(url)
        token = create_token(engine, "cc", "admin")
        engine.dispose()
        env = {
            "EXPERTLINE_DB": url,
            "EXPERTLINE_HA_LEASE_TTL": "2",
            "EXPERTLINE_HA_POLL": "0.1",
            "EXPERTLINE_TEST_XMPP_SECRET": ejabberd.component_secret,
        }
        clients = [
            ExpertClient(
                f"{e}@{ejabberd.domain}", f"{e}-pw", "127.0.0.1", ejabberd.c2s_port, show=s
            )
            for e, s in EXPERTS.items()
        ]
        with (
            running_server(tmp_path, "--role", "runtime", "--node", "a", env=env) as a,
            running_server(tmp_path, "--role", "runtime", "--node", "b", env=env) as b,
        ):
            headers = {"Authorization": f"Bearer {token}"}
            api_a = httpx.AsyncClient(base_url=a.base_url, headers=headers, timeout=10)
            api_b = httpx.AsyncClient(base_url=b.base_url, headers=headers, timeout=10)
            try:
                for client in clients:
                    await client.connect()

                async def presence_on(api: httpx.AsyncClient) -> dict[str, str]:
                    seen = {}
                    for expert in EXPERTS:
                        r = await api.get(f"/api/v1/experts/{expert}/state")
                        seen[expert] = r.json()["presence"] if r.status_code == 200 else "?"
                    return seen

                expected = {e: show or "available" for e, show in EXPERTS.items()}

                async def shows_all(api: httpx.AsyncClient) -> bool:
                    return await presence_on(api) == expected

                await async_eventually(lambda: shows_all(api_a), timeout=30)
                a.proc.kill()
                a.proc.wait(timeout=10)

                async def b_ready() -> bool:
                    return (await api_b.get("/readyz")).status_code == 200

                async def b_active() -> bool:
                    r = await api_b.get("/api/v1/experts/ann/state")
                    return r.status_code == 200

                await async_eventually(b_active, timeout=30)
                took_over = time.monotonic()
                await async_eventually(lambda: shows_all(api_b), timeout=5)
                assert time.monotonic() - took_over <= 5
                await async_eventually(b_ready, timeout=10)
                for _ in range(20):  # and it stays so (no late contrary presence)
                    assert await presence_on(api_b) == expected
                    await asyncio.sleep(0.1)
            finally:
                for client in clients:
                    await client.disconnect()
                await api_a.aclose()
                await api_b.aclose()
