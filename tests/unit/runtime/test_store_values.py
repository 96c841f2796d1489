"""The SQLite fast path writes values exactly as SQLAlchemy would read them back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from expertline.db import migrate
from expertline.db.engine import make_engine, sqlite_time
from expertline.db.tables import routing_feed, runtime_tasks
from expertline.runtime import store
from support.rows import task_row


def test_rows_written_by_the_fast_path_read_back_identically(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    migrate.upgrade(engine)
    at = datetime(2026, 11, 25, 18, 0, 1, 250000, tzinfo=UTC)
    other_zone = at.astimezone(timezone(timedelta(hours=-5)))
    batch = store.Batch()
    batch.feed.append(
        {
            "id": 1,
            "type": "task.created",
            "task_id": "t1",
            "expert_id": None,
            "data": {"n": 1, "nested": {"a": [1, "x"]}, "flag": True},
            "created_at": other_zone,
        }
    )
    row = task_row(created_at=at, updated_at=at)
    batch.tasks["t1"] = row
    store.write_batch(engine, batch)
    again = store.Batch()
    again.tasks["t1"] = {**row, "status": "completed", "active": False}
    store.write_batch(engine, again)

    with engine.connect() as conn:
        feed = conn.execute(select(routing_feed)).one()
        task = conn.execute(select(runtime_tasks)).one()
    assert feed.data == {"n": 1, "nested": {"a": [1, "x"]}, "flag": True}
    assert store.as_utc(feed.created_at) == at
    assert (task.status, task.active) == ("completed", False)
    assert store.as_utc(task.created_at) == at
    assert store.load_sequences(engine).feed == 1


def test_json_values_read_back_as_the_standard_encoder_would_give_them(tmp_path: Path) -> None:
    """Integer keys, tuples, non-ASCII text and huge integers survive the fast encoder."""
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    migrate.upgrade(engine)
    at = datetime(2026, 11, 25, 18, 0, 1, tzinfo=UTC)
    data = {"name": "Zoë 東京", "by_slot": {1: "a"}, "pair": (1, 2), "big": 2**70, "none": None}
    batch = store.Batch()
    batch.feed.append(
        {"id": 1, "type": "x", "task_id": None, "expert_id": None, "data": data, "created_at": at}
    )
    batch.feed.append(
        {"id": 2, "type": "x", "task_id": None, "expert_id": None, "data": None, "created_at": at}
    )
    store.write_batch(engine, batch)

    with engine.connect() as conn:
        rows = conn.execute(select(routing_feed).order_by(routing_feed.c.id)).all()
    assert rows[0].data == {
        "name": "Zoë 東京",
        "by_slot": {"1": "a"},
        "pair": [1, 2],
        "big": 2**70,
        "none": None,
    }
    assert rows[1].data is None


@given(st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False))
def test_api_times_are_the_datetime_form_with_z(ts: float) -> None:
    expected = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
    assert store.iso(ts) == expected.replace("+00:00", "Z")
    assert store.iso(None) is None


@given(st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False))
def test_seconds_are_stored_as_their_datetime_would_be(ts: float) -> None:
    assert sqlite_time(ts) == sqlite_time(datetime.fromtimestamp(ts, UTC))
    assert sqlite_time(ts) == datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
