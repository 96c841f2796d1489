"""A transaction that reads and then writes takes SQLite's write lock at BEGIN.

In WAL mode a deferred transaction that has read cannot write once another process has
committed: its first write fails at once with "database is locked" (no busy wait). A
migration at a node's start (the runtime's writer process already committing) must
therefore begin IMMEDIATE."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import event, text

from expertline.db import migrate
from expertline.db.engine import make_engine


def test_an_immediate_transaction_holds_the_write_lock_from_its_begin(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    engine = make_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (v INTEGER)"))
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    with engine.connect() as conn, conn.execution_options(sqlite_begin="IMMEDIATE").begin():
        conn.execute(text("SELECT count(*) FROM t")).scalar_one()
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
    other.execute("BEGIN IMMEDIATE")  # released at the end of the transaction
    other.execute("ROLLBACK")
    with engine.connect() as conn, conn.begin():  # the default stays deferred
        conn.execute(text("SELECT count(*) FROM t")).scalar_one()
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
    other.close()
    engine.dispose()


def test_a_migration_begins_immediate_on_sqlite(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    begins: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def seen(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        if statement.startswith("BEGIN"):
            begins.append(statement)

    migrate.upgrade(engine)
    assert begins and begins[0] == "BEGIN IMMEDIATE"
    engine.dispose()
