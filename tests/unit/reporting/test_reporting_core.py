"""Reporting decisions without I/O: feed windows, queue contributions, names by version."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from expertline.records.feed import TaskRecord
from expertline.reporting.core import (
    BASE_INTERVAL_MINUTES,
    ConfigView,
    GapWatch,
    QueueFigures,
    QueueTotals,
    Version,
    interval_start,
    parse_interval,
    parse_seconds,
    plan_window,
    queue_row,
    utc,
    visited_before,
)
from expertline.reporting.web.charts import VolumePoint, utilization_chart, volume_chart


def record(**over: object) -> TaskRecord:
    base: dict[str, object] = {
        "task_id": "t",
        "code": "1",
        "external_id": None,
        "channel": "voice",
        "queue_id": "q2",
        "queues": ["q2"],
        "status": "completed",
        "call_disposition": 13,
        "expert_id": "e",
        "caller": None,
        "dialed_number": None,
        "created_at": "2026-11-25T10:14:59+00:00",
        "assigned_at": None,
        "connected_at": None,
        "ended_at": "2026-11-25T10:20:00+00:00",
        "wait": 20.0,
        "ring_time": 0.0,
        "talk_time": 100.0,
        "work_time": 5.0,
        "config_version": 3,
        "node": "n",
        "offers": [],
        "attempts": [],
    }
    base.update(over)
    return base  # type: ignore[return-value]


def test_contiguous_ids_are_taken_whole() -> None:
    w = plan_window(10, [11, 12, 13], None, now=0.0, grace=5.0)
    assert (w.take, w.cursor, w.gap) == (3, 13, None)
    assert plan_window(10, [], None, 0.0, 5.0).reason == "feed is idle"


def test_first_read_starts_at_the_first_row_even_after_pruning() -> None:
    w = plan_window(0, [500, 501, 503], None, now=0.0, grace=5.0)
    assert (w.take, w.cursor) == (2, 501)
    assert w.gap == GapWatch(501, 0.0)


def test_a_hole_holds_later_rows_until_grace_then_is_skipped() -> None:
    w = plan_window(10, [11, 14, 15], None, now=100.0, grace=5.0)
    assert (w.take, w.cursor) == (1, 11)
    assert w.reason.endswith("waiting for ids 12..13")
    still = plan_window(11, [14, 15], w.gap, now=104.9, grace=5.0)
    assert (still.take, still.cursor, still.gap) == (0, 11, w.gap)
    skipped = plan_window(11, [14, 15], w.gap, now=105.0, grace=5.0)
    assert (skipped.take, skipped.cursor, skipped.gap) == (2, 15, None)
    assert "skipped feed ids 12..13" in skipped.reason


@pytest.mark.slow
@given(st.lists(st.integers(min_value=1, max_value=60), unique=True, max_size=30))
def test_window_never_passes_a_fresh_hole(ids: list[int]) -> None:
    ids.sort()
    w = plan_window(0, ids, None, now=0.0, grace=5.0)
    taken = ids[: w.take]
    assert all(b == a + 1 for a, b in pairwise(taken))
    assert w.cursor == (taken[-1] if taken else 0)


def test_intervals_align_on_utc() -> None:
    at = datetime(2026, 11, 25, 10, 44, 59, tzinfo=UTC)
    assert interval_start(at, 15) == datetime(2026, 11, 25, 10, 30, tzinfo=UTC)
    assert interval_start(at, 60) == datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
    assert parse_interval("1h") == 60
    with pytest.raises(ValueError, match="15m, 30m, 60m"):
        parse_interval("10m")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("20s", 20.0),
        ("1h30m", 5400.0),
        ("500ms", 0.5),
        (45, 45.0),
        ("12", 12.0),
        ("soon", 20.0),
        (None, 20.0),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_seconds(text, 20.0) == seconds


def names() -> ConfigView:
    view = ConfigView()
    view.add("queue", "q2", Version(1, 3, "Old", {"service_level": "10s"}))
    view.add("queue", "q2", Version(3, None, "New", {"service_level": "30s"}))
    return view


def test_names_and_thresholds_follow_the_version() -> None:
    view = names()
    assert (view.name("queue", "q2", 2), view.service_level("q2", 2)) == ("Old", 10.0)
    assert (view.name("queue", "q2", 3), view.service_level("q2", 3)) == ("New", 30.0)
    assert view.name("queue", "q2", 0) == "Old"  # before any history: the first known
    assert view.name("queue", "nope", 3) == "nope"
    assert view.service_level("nope", 3) == 20.0


def totals_of(tasks: list[TaskRecord], view: ConfigView) -> dict[tuple[datetime, str], Any]:
    """The queue figures the ingester adds up for ``tasks``."""
    totals = QueueTotals(view)
    for t in tasks:
        totals.add(t, utc(t["created_at"]))
    return totals.figures()


def test_overflowed_task_counts_in_each_queue() -> None:
    figures = totals_of([record(queues=["q1", "q2"])], names())
    by_queue = {q: f for (_, q), f in figures.items()}
    assert {b for b, _ in figures} == {datetime(2026, 11, 25, 10, 0, tzinfo=UTC)}
    assert (by_queue["q1"].offered, by_queue["q1"].overflowed, by_queue["q1"].wait_count) == (
        1,
        1,
        0,
    )
    q2 = by_queue["q2"]
    assert (q2.queue_name, q2.offered, q2.handled, q2.handled_within_sl) == ("New", 1, 1, 1)
    assert q2.handle_time_sum == 105.0


def test_service_level_definitions() -> None:
    view = names()  # q2 threshold 30s at version 3
    tasks = [
        record(task_id="a", wait=10.0),
        record(task_id="b", wait=40.0),
        record(task_id="c", status="abandoned", wait=5.0),
        record(task_id="d", status="abandoned", wait=50.0),
        record(task_id="e", status="rejected", wait=300.0),
    ]
    (((start, queue), fig),) = totals_of(tasks, view).items()
    row = queue_row(start, queue, fig)
    assert row["service_level"] == 0.5  # 1 of 2 handled within 30s
    assert row["service_level_2"] == 0.5  # (1 + 1) of (2 + 2)
    assert (row["offered"], row["rejected"], row["max_wait"], row["avg_wait"]) == (
        5,
        1,
        300.0,
        81.0,
    )


QUEUE_IDS = st.sampled_from(["q1", "q2", "q3"])
TASKS = st.builds(
    lambda n, queue, visited, status, wait, talk, version, second: record(
        task_id=f"t{n}",
        queue_id=queue,
        queues=[*visited, queue],
        status=status,
        wait=wait,
        talk_time=talk,
        config_version=version,
        created_at=f"2026-11-25T10:{second // 60:02d}:{second % 60:02d}.250+00:00",
    ),
    st.integers(0, 10_000),
    QUEUE_IDS,
    st.lists(QUEUE_IDS, max_size=3),
    st.sampled_from(["completed", "abandoned", "overflowed", "rejected", "failed"]),
    st.floats(0, 600, allow_nan=False),
    st.floats(0, 600, allow_nan=False),
    st.integers(0, 4),
    st.integers(0, 3599),
)


@pytest.mark.slow
@given(st.lists(TASKS, max_size=40))
def test_batch_totals_add_up_what_each_task_contributes(tasks: list[TaskRecord]) -> None:
    """The ingester sums a batch task by task; the figures must be exactly those of adding
    up each task's contribution, computed independently below (names, thresholds, overflow,
    wait_max included)."""
    view = names()
    expected = add_up(p for t in tasks for p in task_contribution(t, view))
    assert totals_of(tasks, view) == expected


# An independent, per-task statement of the rules, against which the ingester's sums are
# checked.
def task_contribution(
    record: TaskRecord, names: ConfigView
) -> list[tuple[datetime, str, QueueFigures]]:
    """What one ended task adds to the 15-minute queue figures, keyed by its arrival interval.

    Every queue the task visited counts it as offered; the queues it overflowed from count it
    as overflowed. The queue it ended in counts its outcome, its wait, and the service level
    against that queue's threshold (in effect at the task's config version).
    """
    version = int(record.get("config_version") or 0)
    bucket = interval_start(utc(record["created_at"]), BASE_INTERVAL_MINUTES)
    out: list[tuple[datetime, str, QueueFigures]] = []
    for q in visited_before(record):
        out.append(
            (bucket, q, QueueFigures(names.name("queue", q, version), offered=1, overflowed=1))
        )
    final = record["queue_id"]
    fig = QueueFigures(names.name("queue", final, version), offered=1)
    wait = float(record["wait"])
    threshold = names.service_level(final, version)
    status = record["status"]
    if status == "completed":
        fig.handled = 1
        fig.handle_time_sum = float(record["talk_time"]) + float(record["work_time"])
        fig.handled_within_sl = int(wait <= threshold)
    elif status == "abandoned":
        fig.abandoned = 1
        fig.abandoned_within_sl = int(wait <= threshold)
    elif status == "overflowed":
        fig.overflowed = 1
    elif status == "rejected":
        fig.rejected = 1
    fig.wait_count = 1
    fig.wait_sum = wait
    fig.wait_max = wait
    out.append((bucket, final, fig))
    return out


def add_up(
    parts: Iterable[tuple[datetime, str, QueueFigures]],
) -> dict[tuple[datetime, str], QueueFigures]:
    """Merge contributions by (interval, queue)."""
    total: dict[tuple[datetime, str], QueueFigures] = {}
    for bucket, queue_id, fig in parts:
        key = (bucket, queue_id)
        if key in total:
            total[key].merge(fig)
        else:
            total[key] = QueueFigures(fig.queue_name)
            total[key].merge(fig)
    return total


def test_charts_escape_labels_and_carry_values() -> None:
    svg = volume_chart([VolumePoint("<b>", 3, 1, 0, 0.75)], "t")
    assert "&lt;b&gt;" in svg and "<b>" not in svg
    assert 'data-series="handled" data-value="3"' in svg
    assert 'data-series="service_level" data-value="0.7500"' in svg
    assert "no tasks" in volume_chart([], "t")
    util = utilization_chart([("A & B", 0.5), ("C", None)], "u")
    assert "A &amp; B" in util and 'data-value="0.5000"' in util
