"""Every error of the real ``expertline`` command is one line on stderr and a non-zero exit;
the traceback of an unexpected one only with ``EXPERTLINE_TRACEBACK=1``."""

from __future__ import annotations

from pathlib import Path

import pytest

from expertline.net import free_port
from support.processes import cli


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"EXPERTLINE_DATA_DIR": str(tmp_path / "data"), "EXPERTLINE_TRACEBACK": ""}


def one_error_line(result: object, needle: str) -> str:
    stderr: str = result.stderr  # type: ignore[attr-defined]
    assert result.returncode != 0, result  # type: ignore[attr-defined]
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    assert needle in lines[0], stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.mark.parametrize(
    ("db", "needle"),
    [
        ("bogus://x", "unsupported database 'bogus'"),
        ("mysql://user:secret@localhost/expertline", "unsupported database 'mysql'"),
        (":::", "bad database URL"),
    ],
)
def test_a_bad_database_url_is_one_line(env: dict[str, str], db: str, needle: str) -> None:
    line = one_error_line(cli("--db", db, "tokens", "list", env=env), needle)
    assert "secret" not in line  # the password is masked


def test_an_unreachable_database_is_one_line(env: dict[str, str]) -> None:
    url = f"postgresql://expertline@127.0.0.1:{free_port()}/expertline"
    one_error_line(cli("--db", url, "tokens", "list", env=env), "cannot reach the database")


def test_db_after_the_subcommand_is_the_same_option(env: dict[str, str], tmp_path: Path) -> None:
    one_error_line(cli("tokens", "list", "--db", "bogus://x", env=env), "'bogus'")
    one_error_line(cli("tokens", "list", "--db=bogus://x", env=env), "'bogus'")
    db = f"sqlite:///{tmp_path / 'after.db'}"
    assert cli("db", "upgrade", "--db", db, env=env, check=True)
    created = cli("tokens", "create", "ops", "--role", "admin", "--db", db, env=env, check=True)
    assert created.stdout.strip().splitlines()[-1]
    listed = cli("tokens", "list", f"--db={db}", env=env, check=True)
    assert "ops" in listed.stdout
    # the default database (in the data directory) was never touched
    assert not (tmp_path / "data" / "expertline.db").exists()


def test_a_missing_file_is_one_line(env: dict[str, str], tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    one_error_line(cli("config", "validate", str(missing), env=env), "cannot read")


def test_usage_errors_are_one_line(env: dict[str, str]) -> None:
    one_error_line(cli("tokens", "frob", env=env), "No such command 'frob'")
    one_error_line(cli("tokens", "create", env=env), "Missing argument")
    one_error_line(cli("--db", env=env), "--db")


def test_an_unexpected_error_shows_its_traceback_only_when_asked(
    env: dict[str, str], tmp_path: Path
) -> None:
    # A data directory that is a file: the database cannot be made there.
    blocker = tmp_path / "file"
    blocker.write_text("")
    env = {**env, "EXPERTLINE_DATA_DIR": str(blocker / "data")}
    one_error_line(cli("tokens", "list", env=env), "")
    shown = cli("tokens", "list", env={**env, "EXPERTLINE_TRACEBACK": "1"})
    assert shown.returncode != 0
    assert "Traceback" in shown.stderr
