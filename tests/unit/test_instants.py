"""Time-ordered ids: valid UUID version 7, later ones sort later, no repeats."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from expertline.instants import time_ordered_id

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
