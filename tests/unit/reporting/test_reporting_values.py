"""Feed values as the ingester converts them for the reporting tables (no database)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from expertline.db.engine import json_text
from expertline.records.feed import EXPERT_STATE, TASK_RECORD
from expertline.reporting.batch import (
    Batch,
    json_value,
    pg_time_text,
    sqlite_time_text,
)
from expertline.reporting.core import ConfigView, Version, utc

SQLALCHEMY_SQLITE_FORMAT = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy stores DateTime on SQLite

MOMENTS = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC)
)


def forms(moment: datetime) -> list[str]:
    """The same instant written in the ISO 8601 forms a record may carry."""
    plus_two = moment.astimezone(timezone(timedelta(hours=2)))
    return [
        moment.isoformat(timespec="milliseconds"),  # the runtime's form
        moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        moment.isoformat(timespec="microseconds"),
        moment.isoformat(timespec="seconds"),
        moment.isoformat(timespec="seconds").replace("+00:00", "Z"),
        plus_two.isoformat(timespec="milliseconds"),
        moment.replace(tzinfo=None).isoformat(timespec="milliseconds"),  # naive means UTC
        moment.isoformat(" ", timespec="milliseconds"),
    ]


@pytest.mark.slow
@given(MOMENTS)
def test_sqlite_text_is_sqlalchemys_for_every_form(moment: datetime) -> None:
    for text in forms(moment):
        assert sqlite_time_text(text) == utc(text).strftime(SQLALCHEMY_SQLITE_FORMAT), text


@pytest.mark.slow
@given(MOMENTS)
def test_postgresql_text_is_the_same_instant_with_an_explicit_offset(moment: datetime) -> None:
    for text in forms(moment):
        converted = pg_time_text(text)
        parsed = datetime.fromisoformat(converted)
        assert parsed.utcoffset() is not None, converted  # never left to the session zone
        assert parsed == utc(text), text


@pytest.mark.parametrize(
    "text",
    ["", "soon", "2026-13-01T10:00:00.000+00:00", "2026-11-25T24:00:00.000+00:00"],
)
def test_times_that_are_not_times_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        sqlite_time_text(text)
    with pytest.raises(ValueError):
        pg_time_text(text)


def test_json_bodies_from_an_older_encoder_still_decode() -> None:
    assert json_value('{"a": [1, "é"]}') == {"a": [1, "é"]}
    assert math.isnan(json_value('{"wait": NaN}')["wait"])  # orjson refuses NaN
    assert json_text(["q1", "é"]) == '["q1","é"]'
    assert json_text([2**70]) == f"[{2**70}]"


def task(task_id: str, version: int = 1, **over: object) -> dict[str, object]:
    rec: dict[str, object] = {
        "task_id": task_id,
        "queue_id": "q1",
        "status": "completed",
        "call_disposition": 13,
        "created_at": "2026-11-25T10:00:00.125+00:00",
        "ended_at": "2026-11-25T10:02:00.500+00:00",
        "wait": 4,
        "config_version": version,
        "offers": [
            {
                "offer_id": f"{task_id}-1",
                "expert_id": "e1",
                "created_at": "2026-11-25T10:00:00.125+00:00",
                "ended_at": None,
                "outcome": "open",
            }
        ],
        "attempts": [{"expert_id": "e2", "disposition": "19", "at": "2026-11-25T10:00:01Z"}],
    }
    rec.update(over)
    return rec


def test_a_batch_builds_rows_in_column_order_with_defaults() -> None:
    view = ConfigView()
    view.add("queue", "q1", Version(1, None, "Queue One", {"service_level": "15s"}))
    rows = [
        (7, TASK_RECORD, task("t1")),
        (8, "task.queued", None),  # other types: no body
        (9, EXPERT_STATE, {"expert_id": "e1", "state": "busy", "at": "2026-11-25T10:00:00Z"}),
        (10, TASK_RECORD, task("t1", status="abandoned")),  # the same task again
    ]
    batch = Batch.build(rows, view, sqlite_target=True)
    assert batch.task_records == 2
    assert list(batch.tasks) == ["t1"]
    prepared = batch.tasks["t1"]
    assert prepared.row == (
        "t1",
        7,
        "",
        None,
        "voice",
        "q1",
        "Queue One",
        '["q1"]',
        "completed",  # the first record of a task wins
        13,
        None,
        None,
        None,
        "2026-11-25 10:00:00.125000",
        None,
        None,
        "2026-11-25 10:02:00.500000",
        4.0,
        0.0,
        0.0,
        0.0,
        15.0,
        1,
        "",
    )
    assert prepared.offers == [
        ("t1-1", "t1", "e1", "q1", "2026-11-25 10:00:00.125000", None, "open")
    ]
    assert prepared.attempts == [("t1", 1, "e2", 19, "2026-11-25 10:00:01.000000")]
    assert prepared.arrived == datetime(2026, 11, 25, 10, 0, 0, 125000, tzinfo=UTC)
    assert batch.states == [(9, rows[2][2])]
