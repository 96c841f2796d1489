"""``expertline serve`` as an operator sees it: health, auth, metrics, clean stop, clear failures."""

from __future__ import annotations

import signal

import httpx
from sqlalchemy import create_engine, text

from support.databases import postgres_database
from support.processes import cli, free_port, running_server


def test_serve_answers_health_and_requires_tokens(tmp_path):
    env = {"EXPERTLINE_DATA_DIR": str(tmp_path / "data")}
    with running_server(tmp_path, env=env) as server:
        assert httpx.get(server.base_url + "/healthz").json() == {"status": "ok"}
        ready = httpx.get(server.base_url + "/readyz")
        assert ready.status_code == 200 and ready.json()["components"]["database"]["up"] is True
        metrics = httpx.get(server.base_url + "/metrics").text
        assert 'expertline_component_up{component="database"} 1.0' in metrics

        anonymous = httpx.get(server.base_url + "/api/v1/status")
        assert anonymous.status_code == 401
        assert anonymous.json()["error"]["code"] == "unauthorized"
        bogus = httpx.get(
            server.base_url + "/api/v1/status", headers={"Authorization": "Bearer nope"}
        )
        assert bogus.status_code == 401

        token = (
            cli("tokens", "create", "ops", "--role", "reporting", env=env, check=True)
            .stdout.strip()
            .splitlines()[-1]
        )
        status = httpx.get(
            server.base_url + "/api/v1/status", headers={"Authorization": f"Bearer {token}"}
        )
        assert status.status_code == 200
        assert status.json()["state"] == "active"
        assert server.stop(signal.SIGTERM) == 0
        assert "stopping" in server.log()


def test_busy_port_is_one_clear_line(tmp_path):
    env = {"EXPERTLINE_DATA_DIR": str(tmp_path / "data")}
    with running_server(tmp_path, env=env) as server:
        port = server.base_url.rsplit(":", 1)[1]
        result = cli("serve", "--http", f"127.0.0.1:{port}", env=env)
        assert result.returncode != 0
        assert "error: cannot listen on 127.0.0.1:" in result.stderr


def test_bad_flag_and_unreachable_database_fail_clearly(tmp_path):
    env = {"EXPERTLINE_DATA_DIR": str(tmp_path / "data")}
    bad = cli("serve", "--http", "nonsense", env=env)
    assert bad.returncode != 0 and "expected HOST:PORT" in bad.stderr
    dead = free_port()
    unreachable = cli(
        "--db",
        f"postgresql://postgres@127.0.0.1:{dead}/x",
        "serve",
        "--http",
        f"127.0.0.1:{free_port()}",
    )
    assert unreachable.returncode != 0
    assert unreachable.stderr.strip().startswith("error: cannot reach the database")


def test_unmigrated_postgres_is_refused_until_upgraded(tmp_path):
    with postgres_database() as url:
        result = cli("--db", url, "serve", "--http", f"127.0.0.1:{free_port()}")
        assert result.returncode != 0
        assert "expertline db upgrade" in result.stderr
        assert cli("--db", url, "db", "upgrade").returncode == 0
        engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
        with engine.connect() as conn:
            assert conn.execute(text("select count(*) from alembic_version")).scalar() == 1
        engine.dispose()
        with running_server(tmp_path, env={"EXPERTLINE_DB": url}) as server:
            ready = httpx.get(server.base_url + "/readyz").json()
            assert ready["components"]["database"] == {"up": True, "required": True}
