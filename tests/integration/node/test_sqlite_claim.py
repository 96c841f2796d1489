"""A runtime holds an exclusive claim on its SQLite database: a second runtime on the same
file is refused with one line (it would accept tasks whose commits are lost), the first keeps
serving, and a runtime killed with SIGKILL leaves no stale claim behind."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx

from expertline.db.claim import SqliteClaim
from support.processes import cli, free_port, running_server

TASK = {"entry_point": "+18005550100", "caller": "+15551234567"}


def demo_env(tmp_path: Path) -> dict[str, str]:
    env = {"EXPERTLINE_DATA_DIR": str(tmp_path / "data")}
    cli("db", "upgrade", env=env, check=True)
    cli("config", "import", "examples/demo.yaml", env=env, check=True)
    return env


def admin_token(env: dict[str, str]) -> str:
    created = cli("tokens", "create", "ops", "--role", "admin", env=env, check=True)
    return created.stdout.strip().splitlines()[-1]


def test_a_second_runtime_on_the_same_sqlite_file_is_refused(tmp_path: Path) -> None:
    env = demo_env(tmp_path)
    token = admin_token(env)
    with running_server(tmp_path, env=env) as first:
        second = cli("serve", "--http", f"127.0.0.1:{free_port()}", env=env)
        assert second.returncode != 0
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr
        assert lines[0].startswith("error: the SQLite database ")
        assert f"in use by another expertline runtime (pid {first.proc.pid})" in lines[0]
        assert "no HA" in lines[0]

        with first.client(token) as client:  # the first still serves and stores tasks
            created = client.post("/api/v1/tasks", json=TASK)
            assert created.status_code == 201, created.text
            task_id = created.json()["id"]
            assert client.get(f"/api/v1/tasks/{task_id}").status_code == 200

        assert first.stop(signal.SIGKILL) == -signal.SIGKILL
    # SIGKILL gave no chance to let go: the operating system released the claim.
    with running_server(tmp_path, env=env) as third, third.client(token) as client:
        assert client.get(f"/api/v1/tasks/{task_id}").status_code == 200


def test_reporting_only_nodes_and_other_commands_need_no_claim(tmp_path: Path) -> None:
    env = demo_env(tmp_path)
    with running_server(tmp_path, env=env):
        assert cli("tokens", "list", env=env).returncode == 0
        with running_server(tmp_path, "--role", "reporting", env=env) as reporting:
            assert httpx.get(reporting.base_url + "/healthz").status_code == 200


def test_the_claim_is_exclusive_and_released(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    first = SqliteClaim.for_url(url)
    second = SqliteClaim.for_url(url)
    assert first is not None and second is not None
    first.acquire()
    try:
        try:
            second.acquire()
        except Exception as exc:
            assert "in use by another expertline runtime" in str(exc)
        else:
            raise AssertionError("a second claim on the same file was granted")
    finally:
        first.release()
    second.acquire()
    assert second.held
    second.release()
    assert SqliteClaim.for_url("sqlite://") is None
    assert SqliteClaim.for_url("postgresql://u@h/db") is None
