"""Record helpers: the fast ISO time text is the one ``datetime`` would write."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from expertline.routing import records


@given(st.floats(min_value=0, max_value=4_000_000_000, allow_nan=False))
def test_iso_matches_datetime(ts: float) -> None:
    assert records.iso(ts) == datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


@given(st.integers(min_value=0, max_value=4_000_000_000_000).map(lambda ms: ms / 1000))
def test_iso_of_whole_milliseconds(ts: float) -> None:
    assert records.iso(ts) == datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def test_iso_of_nothing_is_nothing() -> None:
    assert records.iso(None) is None
