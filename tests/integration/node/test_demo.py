"""``expertline demo`` keeps one admin token and prints it at every start; a start that fails
(busy port, database in use) changes nothing, so the running demo's token keeps working."""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from expertline.db.engine import make_engine
from expertline.security.tokens import list_tokens
from support.processes import ServerProcess, cli, expertline_cmd, free_port
from support.wait import eventually

CONFIG = str(Path(__file__).resolve().parents[3] / "examples" / "demo.yaml")


@contextmanager
def running_demo(tmp_path: Path, env: dict[str, str]) -> Iterator[tuple[ServerProcess, str]]:
    """A demo on a free port, and the admin token it printed (its last line)."""
    port = free_port()
    log_path = tmp_path / f"demo-{port}.log"
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(
            expertline_cmd("demo", "--config", CONFIG, "--http", f"127.0.0.1:{port}"),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            text=True,
            env=environment(env),
        )
        server = ServerProcess(proc, f"http://127.0.0.1:{port}", log_path)
        try:

            def up() -> bool:
                if proc.poll() is not None:
                    raise RuntimeError(f"demo exited early ({proc.returncode}):\n{server.log()}")
                return httpx.get(server.base_url + "/healthz", timeout=2).status_code == 200

            eventually(up, timeout=30, interval=0.1)
            printed = server.log().split("admin token", 1)[1].splitlines()[1].strip()
            yield server, printed
        finally:
            server.stop()


def environment(env: dict[str, str]) -> dict[str, str]:
    """The test's environment with ``env`` over it; an empty value removes the variable."""
    merged = {**os.environ, **env}
    return {k: v for k, v in merged.items() if v != ""}


def live_demo_tokens(env: dict[str, str]) -> int:
    engine = make_engine(f"sqlite:///{env['EXPERTLINE_DATA_DIR']}/expertline.db")
    try:
        return sum(
            1 for t in list_tokens(engine) if t.name == "demo-admin" and t.revoked_at is None
        )
    finally:
        engine.dispose()


def experts(server: ServerProcess, token: str) -> int:
    with server.client(token) as client:
        return client.get("/api/v1/experts").status_code


def test_a_failed_demo_start_changes_nothing_and_the_token_is_kept(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {"EXPERTLINE_DATA_DIR": str(data)}
    with running_demo(tmp_path, env) as (demo, token):
        kept = data / "demo-admin.token"
        assert kept.read_text().strip() == token
        assert stat.S_IMODE(kept.stat().st_mode) == 0o600
        assert experts(demo, token) == 200

        port = demo.base_url.rsplit(":", 1)[1]
        busy = cli("demo", "--config", CONFIG, "--http", f"127.0.0.1:{port}", env=env)
        assert busy.returncode != 0
        assert busy.stderr.strip().splitlines() == [
            line for line in busy.stderr.strip().splitlines() if line.startswith("error: ")
        ]
        assert "cannot listen on" in busy.stderr
        assert token not in busy.stdout  # no new token was made or printed

        other = cli("demo", "--config", CONFIG, "--http", f"127.0.0.1:{free_port()}", env=env)
        assert other.returncode != 0
        assert "in use by another expertline runtime" in other.stderr

        assert experts(demo, token) == 200  # the running demo's token still works
        assert kept.read_text().strip() == token
        assert live_demo_tokens(env) == 1

    with running_demo(tmp_path, env) as (again, printed):  # the same token at every start
        assert printed == token
        assert experts(again, token) == 200
        assert live_demo_tokens(env) == 1


def test_a_lost_token_file_gives_one_new_demo_token(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {"EXPERTLINE_DATA_DIR": str(data)}
    with running_demo(tmp_path, env) as (_, first):
        pass
    (data / "demo-admin.token").unlink()
    with running_demo(tmp_path, env) as (demo, second):
        assert second != first
        assert experts(demo, first) == 401  # the earlier demo token is revoked
        assert experts(demo, second) == 200
        assert live_demo_tokens(env) == 1


def test_the_demo_and_the_command_line_share_the_default_database(tmp_path: Path) -> None:
    # No data directory given: both use $XDG_DATA_HOME/expertline.
    env = {"XDG_DATA_HOME": str(tmp_path / "xdg"), "EXPERTLINE_DATA_DIR": ""}
    with running_demo(tmp_path, env) as (demo, token):
        assert (tmp_path / "xdg" / "expertline" / "demo-admin.token").exists()
        listed = subprocess.run(
            expertline_cmd("tokens", "list"), capture_output=True, text=True, env=environment(env)
        )
        assert listed.returncode == 0, listed.stderr
        assert "demo-admin" in listed.stdout
        assert experts(demo, token) == 200
    script = (Path(__file__).resolve().parents[3] / "scripts" / "run-demo").read_text()
    assert "EXPERTLINE_DATA_DIR=" not in script  # the script picks no database of its own
