"""``expertline users``: the password comes from standard input (or a terminal), never a flag."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from expertline.cli import app
from expertline.db import migrate
from expertline.db.engine import make_engine
from expertline.web import users


def test_users_are_created_with_a_password_from_standard_input(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'expertline.db'}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    runner = CliRunner()
    made = runner.invoke(
        app, ["--db", url, "users", "create", "ann", "--role", "admin"], input="s3cret-enough\n"
    )
    assert made.exit_code == 0, made.output
    assert "created user 'ann' with role admin" in made.output
    assert "s3cret-enough" not in made.output
    assert users.authenticate(engine, "ann", "s3cret-enough") is not None

    flag = runner.invoke(
        app, ["--db", url, "users", "create", "bob", "--role", "admin", "--password", "x"]
    )
    assert flag.exit_code != 0  # there is no such option
    empty = runner.invoke(app, ["--db", url, "users", "create", "bob", "--role", "admin"], input="")
    assert empty.exit_code != 0
    assert [u.username for u in users.list_users(engine)] == ["ann"]

    changed = runner.invoke(app, ["--db", url, "users", "password", "ann"], input="another-one\n")
    assert changed.exit_code == 0, changed.output
    assert users.authenticate(engine, "ann", "another-one") is not None
    assert runner.invoke(app, ["--db", url, "users", "disable", "ann"]).exit_code == 0
    assert users.authenticate(engine, "ann", "another-one") is None
    engine.dispose()
