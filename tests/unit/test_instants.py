"""Instants: one text form (ISO 8601, UTC, milliseconds, ``Z``) for POSIX seconds and
datetimes alike; time-ordered ids: valid UUID version 7, later ones sort later, no repeats."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from expertline.instants import instants_as_text, iso, time_ordered_id

MS = 1_000_000  # nanoseconds


def test_an_id_is_a_version_7_uuid_carrying_its_millisecond() -> None:
    now = 1_795_000_000_123 * MS + 456
    value = uuid.UUID(hex=time_ordered_id(now))
    assert value.version == 7
    assert value.variant == uuid.RFC_4122
    assert value.int >> 80 == 1_795_000_000_123


@given(st.integers(min_value=0, max_value=2**47 * MS), st.integers(min_value=1, max_value=10**6))
def test_ids_of_a_later_millisecond_sort_later(at: int, later_ms: int) -> None:
    assert time_ordered_id(at) < time_ordered_id(at + later_ms * MS)


def test_ids_made_in_the_same_millisecond_differ() -> None:
    at = 1_795_000_000_000 * MS
    ids = {time_ordered_id(at) for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_the_text_of_an_instant_has_milliseconds_and_z() -> None:
    moment = datetime(2026, 11, 25, 10, 0, 0, 632000, tzinfo=UTC)
    assert iso(moment) == "2026-11-25T10:00:00.632Z"  # not .632000Z, not +00:00
    assert iso(moment.timestamp()) == "2026-11-25T10:00:00.632Z"
    assert iso(moment.replace(tzinfo=None)) == "2026-11-25T10:00:00.632Z"  # naive is UTC
    paris = timezone(timedelta(hours=1))
    assert iso(moment.astimezone(paris)) == "2026-11-25T10:00:00.632Z"
    assert iso(None) is None


@given(st.integers(min_value=0, max_value=4_102_444_800_000_000))
def test_seconds_and_datetimes_of_an_instant_have_one_text(us: int) -> None:
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)
    text = iso(moment)
    # POSIX seconds as a float may be a microsecond off; it shows only at a millisecond edge
    assert text == iso(us / 1e6) or us % 1000 in (0, 999)
    assert text is not None and text.endswith("Z") and len(text) == 24
    assert datetime.fromisoformat(text) == moment.replace(
        microsecond=moment.microsecond // 1000 * 1000
    )


def test_stored_seconds_become_text_in_at_fields_only() -> None:
    data = {"at": 100.25, "expires_at": 100, "delay_time": 1.5, "ok_at": True, "ended_at": None}
    assert instants_as_text(data) == {
        "at": "1970-01-01T00:01:40.250Z",
        "expires_at": "1970-01-01T00:01:40.000Z",
        "delay_time": 1.5,
        "ok_at": True,
        "ended_at": None,
    }
