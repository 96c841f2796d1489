"""Which commit failures are the database refusing the data (never retried as is), and what
is said about them (one line, no SQL, no row values)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from expertline.routing.timers import TimerKey, TimerKind
from expertline.runtime import sqlwrite, store
from expertline.runtime.refusal import refusal
from expertline.runtime.replay import timer_task


def _sqlite_error(sql: str, *params: Any) -> sqlite3.Error:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("CREATE TABLE t (id TEXT PRIMARY KEY, v TEXT NOT NULL)")
    conn.execute(
        "CREATE TRIGGER guard BEFORE INSERT ON t WHEN NEW.v = 'bad' "
        "BEGIN SELECT RAISE(ABORT, 'bad value refused'); END"
    )
    conn.execute("INSERT INTO t VALUES ('a', 'ok')")
    with pytest.raises(sqlite3.Error) as caught:
        conn.execute(sql, params)
    return caught.value


class FakePgError(Exception):
    """What psycopg raises: a DB-API class with the server's SQLSTATE and diagnostics."""

    class Diag:
        def __init__(self, primary: str) -> None:
            self.message_primary = primary

    def __init__(self, sqlstate: str | None, message: str) -> None:
        super().__init__(message + "\nDETAIL:  Failing row contains (secret, 42).")
        self.sqlstate = sqlstate
        self.diag = self.Diag(message)


class DatabaseError(Exception):
    pass


class DataError(DatabaseError):
    pass


class OperationalError(DatabaseError):
    pass


class Wrapped(Exception):
    """SQLAlchemy's wrapper: the driver's exception in ``orig``, SQL and rows in its text."""

    def __init__(self, orig: BaseException) -> None:
        super().__init__("[SQL: INSERT INTO t ...] [parameters: {'v': 'secret'}]")
        self.orig = orig


def test_constraints_and_triggers_are_refusals_with_their_own_words() -> None:
    unique = _sqlite_error("INSERT INTO t VALUES ('a', 'x')")
    assert refusal(unique) == "UNIQUE constraint failed: t.id"
    assert refusal(_sqlite_error("INSERT INTO t VALUES ('b', 'bad')")) == "bad value refused"
    assert refusal(_sqlite_error("INSERT INTO t VALUES ('b', NULL)")) == (
        "NOT NULL constraint failed: t.v"
    )
    assert refusal(_sqlite_error("INSERT INTO t VALUES (?, ?)", "b", object())) is not None


def test_a_busy_locked_or_missing_database_is_not_a_refusal() -> None:
    assert refusal(_sqlite_error("INSERT INTO missing VALUES (1)")) is None  # no such table
    locked = sqlite3.OperationalError("database is locked")
    assert refusal(locked) is None
    assert refusal(Wrapped(OperationalError("connection refused"))) is None
    assert refusal(TimeoutError()) is None
    assert refusal(ConnectionResetError()) is None
    assert refusal(sqlwrite.OutOfOrder("batch 3 waits for batch 2")) is None


@pytest.mark.parametrize(
    ("sqlstate", "message", "expected"),
    [
        ("22P02", "invalid input syntax for type json", "invalid input syntax for type json"),
        ("22001", "value too long for type character varying(255)", None),
        ("23505", 'duplicate key value violates unique constraint "uq_x"', None),
        ("23514", 'new row for relation "t" violates check constraint "c"', None),
        (
            "22P02",
            'invalid input syntax for type integer: "secret"',
            "invalid input syntax for type integer",
        ),
        ("54000", "index row size 9000 exceeds btree version 4 maximum 2704", None),
    ],
)
def test_postgresql_data_and_integrity_errors_are_refusals(
    sqlstate: str, message: str, expected: str | None
) -> None:
    reason = refusal(Wrapped(FakePgError(sqlstate, message)))
    assert reason == (expected or message)
    assert "secret" not in reason and "SQL" not in reason


@pytest.mark.parametrize(
    "sqlstate", ["08006", "57P01", "40001", "40P01", "53100", "42P01", "25P02"]
)
def test_postgresql_connection_resource_and_schema_errors_are_retried(sqlstate: str) -> None:
    assert refusal(Wrapped(FakePgError(sqlstate, "something"))) is None


def test_a_driver_refusing_a_value_before_sending_it_is_a_refusal() -> None:
    nul = DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes")
    assert refusal(Wrapped(nul)) == "PostgreSQL text fields cannot contain NUL (0x00) bytes"
    assert refusal(Wrapped(OperationalError("server closed the connection"))) is None


def test_values_that_cannot_be_encoded_are_refusals_without_the_value() -> None:
    with pytest.raises(UnicodeEncodeError) as surrogate:
        "\ud800secret".encode()
    reason = refusal(surrogate.value)
    assert reason == "text that is not valid Unicode (surrogates not allowed)"
    assert refusal(TypeError("Object of type object is not JSON serializable")) == (
        "a value that cannot be stored (Object of type object is not JSON serializable)"
    )


def test_a_refused_batch_in_a_group_is_refused_alone(tmp_path: Path) -> None:
    """The writer process commits batches that arrived together in one transaction; when the
    database refuses one, those before it still commit and those after it wait for it."""
    from expertline.db import migrate
    from expertline.db.engine import make_engine

    path = tmp_path / "w.db"
    migrate.upgrade(make_engine(f"sqlite:///{path}"))
    conn = sqlite3.connect(path, isolation_level=None)
    writer = sqlwrite.SqliteBatchWriter(store.table_plans())

    def batch(seq: int, feed_id: int) -> sqlwrite.Writes:
        b = store.Batch(seq=seq)
        row = {"type": "t", "task_id": None, "expert_id": None, "data": {}, "created_at": 1.0}
        b.feed.append({"id": feed_id, **row})
        return store.writes(b)

    answers = sqlwrite.commit_group(conn, writer, [batch(1, 1), batch(2, 1), batch(3, 3)])
    assert answers[0] == ("ok", True)
    assert answers[1][0] == "refused"
    assert answers[1][1] == ("IntegrityError", "UNIQUE constraint failed: routing_feed.id")
    assert answers[2] == ("behind", "batch 3 waits for batch 2")
    assert sqlwrite.committed_seq(conn.cursor()) == 1


@pytest.mark.parametrize(
    ("key", "task"),
    [
        (TimerKey(TimerKind.OFFER, "01abc.3"), "01abc"),
        (TimerKey(TimerKind.MAX_WAIT, "01abc"), "01abc"),
        (TimerKey(TimerKind.LIFETIME, "01abc"), "01abc"),
        (TimerKey(TimerKind.ESCALATE, "01abc", "2"), "01abc"),
        (TimerKey(TimerKind.COOLDOWN, "01abc", "alice"), "01abc"),
        (TimerKey(TimerKind.WRAP_UP, "alice"), None),
        (None, None),
    ],
)
def test_the_task_of_a_timer(key: TimerKey | None, task: str | None) -> None:
    assert timer_task(key) == task
