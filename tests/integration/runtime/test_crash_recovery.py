"""kill -9 of a runtime process mid-flight: nothing lost, nothing ended twice.

A real server process (uvicorn + RuntimeService) is killed with SIGKILL while tasks are
queued, offered, assigned and connected, and while a burst of creates is in flight; a new
process on the same database must show every acknowledged task in the same state, and after
the test drives them all to their end every task has exactly one TCD.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from sqlalchemy import Engine, func, select

from expertline.db.tables import runtime_tasks, tcd
from expertline.security.tokens import create_token
from support.processes import free_port
from support.runtime_client import TWO_QUEUES_YAML, RuntimeClient
from support.wait import eventually

SERVER = Path(__file__).parent / "rt_server.py"


def _has_config_pipeline() -> bool:
    return all(
        importlib.util.find_spec(name) is not None
        for name in ("expertline.config.cli", "expertline.eligibility.build")
    )


def _prepare(url: str, tmp: Path) -> list[str] | None:
    """Import the configuration; the command line of a real ``expertline serve``, or None
    when this installation cannot build routing configurations (then the test server runs)."""
    if not _has_config_pipeline():
        return None
    path = tmp / "crash.yaml"
    path.write_text(TWO_QUEUES_YAML)
    env = {**os.environ, "EXPERTLINE_DATA_DIR": str(tmp)}
    done = subprocess.run(
        [sys.executable, "-m", "expertline", "--db", url, "config", "import", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return [sys.executable, "-m", "expertline", "--db", url, "serve", "--role", "runtime"]


@contextmanager
def server(
    url: str, port: int, serve: list[str] | None, tmp: Path
) -> Iterator[subprocess.Popen[bytes]]:
    if serve is not None:
        command = [*serve, "--http", f"127.0.0.1:{port}", "--node", "crash-node"]
    else:
        command = [sys.executable, str(SERVER), url, str(port)]
    proc = subprocess.Popen(
        command,
        env={
            **os.environ,
            "PYTHONPATH": str(Path(__file__).parents[2]),
            "EXPERTLINE_DATA_DIR": str(tmp),
            # On PostgreSQL the restarted node waits for the killed one's lease to lapse.
            "EXPERTLINE_HA_LEASE_TTL": "2",
        },
    )
    try:

        def up() -> bool:  # ready: the active node, taking work
            assert proc.poll() is None, f"server exited with {proc.returncode}"
            return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200

        eventually(up, timeout=120, interval=0.1)
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def test_kill_9_mid_flight_loses_nothing_and_ends_each_task_once(
    engine: Engine, tmp_path: Path
) -> None:
    url = engine.url.render_as_string(hide_password=False)
    serve = _prepare(url, tmp_path)
    port = free_port()
    rc = create_token(engine, "cc", "routing-client")
    ex = create_token(engine, "integration", "admin")  # acts for every expert

    with server(url, port, serve, tmp_path) as proc:
        c = RuntimeClient(f"http://127.0.0.1:{port}", rc, ex)
        for expert in ("alice", "bob", "carol"):
            c.presence(expert, "available")
        connected = c.create(entry_point="+18005550100", external_id="t-connected")
        offers = c.offers("alice")
        c.accept(offers[0]["id"])
        c.event(connected["id"], "connected")
        offered = c.create(entry_point="+18005550100", external_id="t-offered")  # only bob is free
        queued = c.create(entry_point="+18005550100", external_id="t-queued")  # nobody left
        support = c.create(entry_point="+18005550200", external_id="t-support")  # offered to carol
        carol_offer = c.offers("carol")[0]
        c.accept(carol_offer["id"])  # assigned
        before = {t["id"]: c.task(t["id"]) for t in (connected, offered, queued, support)}
        assert [v["status"] for v in before.values()] == [
            "connected",
            "offered",
            "queued",
            "assigned",
        ]

        # A burst of creates, killed while it runs: every acknowledged one must survive.
        acknowledged: list[str] = []

        async def burst() -> None:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as ac:

                async def one(i: int) -> None:
                    try:
                        r = await ac.post(
                            "/api/v1/tasks",
                            json={"entry_point": "+18005550200", "external_id": f"burst-{i}"},
                            headers=c.rc,
                        )
                    except httpx.HTTPError:
                        return
                    if r.status_code == 201:
                        acknowledged.append(r.json()["id"])
                        if len(acknowledged) == 5:
                            os.kill(proc.pid, signal.SIGKILL)

                await asyncio.gather(*(one(i) for i in range(20)))

        asyncio.run(burst())
        proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL
        assert len(acknowledged) >= 5

    with server(url, port, serve, tmp_path):
        c = RuntimeClient(f"http://127.0.0.1:{port}", rc, ex)
        for tid, seen in before.items():
            after = c.task(tid)
            assert (after["status"], after["expert"], after["label"], after["code"]) == (
                seen["status"],
                seen["expert"],
                seen["label"],
                seen["code"],
            )
        assert [o["task_id"] for o in c.offers("bob")] == [offered["id"]]
        for tid in acknowledged:
            assert c.task(tid)["status"] in ("queued", "offered")
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(tcd)).scalar() == 0
            all_ids = [r[0] for r in conn.execute(select(runtime_tasks.c.task_id))]
        assert set(acknowledged) | set(before) <= set(all_ids)
        c.finish(all_ids)

    with engine.connect() as conn:
        per_task = dict(
            conn.execute(select(tcd.c.task_id, func.count()).group_by(tcd.c.task_id)).all()
        )
        dispositions = {r[0] for r in conn.execute(select(tcd.c.call_disposition))}
    assert set(per_task) == set(all_ids)
    assert set(per_task.values()) == {1}
    assert dispositions == {13}
