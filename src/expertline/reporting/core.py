"""Reporting decisions without I/O: which feed rows to take, and what each task adds to a queue.

The ingester (``expertline.reporting.ingest``) reads rows and writes tables; everything it
decides comes from here, so the rules can be tested on hand-written records and a fake clock.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from expertline.instants import iso
from expertline.records.feed import TaskRecord

BASE_INTERVAL_MINUTES = 15
INTERVALS = {"15m": 15, "30m": 30, "60m": 60}
DEFAULT_SERVICE_LEVEL = 20.0
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# --- time ----------------------------------------------------------------------------------


def utc(value: datetime | str) -> datetime:
    """A timezone-aware UTC datetime from an ISO string or a datetime (naive means UTC)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    tz = value.tzinfo
    if tz is UTC:
        return value
    if tz is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def interval_start(at: datetime, minutes: int) -> datetime:
    """The start of the ``minutes``-long interval holding ``at`` (intervals aligned on UTC)."""
    seconds = int((utc(at) - EPOCH).total_seconds())
    step = minutes * 60
    return EPOCH + timedelta(seconds=seconds - seconds % step)


def parse_interval(value: str) -> int:
    """``15m`` / ``30m`` / ``60m`` (also ``1h``) -> minutes; ValueError otherwise."""
    text = value.strip().lower()
    if text == "1h":
        text = "60m"
    if text not in INTERVALS:
        raise ValueError(f"interval must be one of {', '.join(INTERVALS)}, got {value!r}")
    return INTERVALS[text]


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_seconds(value: Any, default: float) -> float:
    """A configuration duration (``20s``, ``5m``, ``1h30m``, ``500ms`` or seconds as a number);
    ``default`` when absent or unreadable (history written by an older version)."""
    if isinstance(value, bool) or value is None:
        return default
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip().lower()
    try:
        return float(text)
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return default
    return sum(float(n) * _UNITS[u] for n, u in parts)


# --- which feed rows to take ---------------------------------------------------------------


@dataclass
class GapWatch:
    """A hole in the feed ids, seen at ``first_seen`` (monotonic seconds)."""

    after: int  # the last id before the hole
    first_seen: float


@dataclass(frozen=True)
class Window:
    """What to ingest from one read of the feed, and why."""

    take: int  # how many of the rows read (a prefix) to ingest
    cursor: int  # the cursor after ingesting them
    gap: GapWatch | None  # a hole still being waited for
    reason: str


def plan_window(
    cursor: int, ids: Sequence[int], gap: GapWatch | None, now: float, grace: float
) -> Window:
    """Take the rows whose ids follow the cursor without a hole.

    The runtime numbers feed rows in commit order with no holes, so a hole means a row not
    committed yet: rows after it wait. A hole that lasts ``grace`` seconds is skipped (an id
    consumed by a transaction that rolled back). A cursor of 0 (never consumed) takes the feed
    from its first row, which may be > 1 once old rows are pruned.
    """
    expected = cursor + 1
    take = 0
    for fid in ids:
        if fid == expected or (cursor == 0 and take == 0):
            take += 1
            expected = fid + 1
            continue
        break
    last = ids[take - 1] if take else cursor
    if take == len(ids):
        reason = f"took {take} row(s) up to id {last}" if take else "feed is idle"
        return Window(take, last, None, reason)
    # A hole after ``last``.
    hole_end = ids[take] - 1
    if gap is not None and gap.after == last:
        if now - gap.first_seen >= grace:
            # Skip the hole and take on from the row after it.
            rest = plan_window(hole_end, ids[take:], None, now, grace)
            reason = (
                f"skipped feed ids {last + 1}..{hole_end} after {now - gap.first_seen:.1f}s "
                f"(never committed); {rest.reason}"
            )
            return Window(take + rest.take, rest.cursor, rest.gap, reason)
        watch = gap
    else:
        watch = GapWatch(last, now)
    reason = f"took {take} row(s) up to id {last}; waiting for ids {last + 1}..{hole_end}"
    return Window(take, last, watch, reason)


# --- configuration names -------------------------------------------------------------------


@dataclass(frozen=True)
class Version:
    """One object's body over config versions [version_from, version_to)."""

    version_from: int
    version_to: int | None
    name: str
    body: dict[str, Any]


@dataclass
class ConfigView:
    """Object names and settings by config version, from the configuration history."""

    versions: dict[tuple[str, str], list[Version]] = field(default_factory=dict)
    _memo: dict[tuple[str, str, int], Version | None] = field(default_factory=dict)
    _levels: dict[tuple[str, int], float] = field(default_factory=dict)

    def add(self, kind: str, object_id: str, version: Version) -> None:
        self.versions.setdefault((kind, object_id), []).append(version)
        self._memo.clear()
        self._levels.clear()

    def at(self, kind: str, object_id: str, version: int) -> Version | None:
        """The object as it was at config ``version``; the nearest later one if it did not
        exist yet (a record written before the history was copied), else None."""
        key = (kind, object_id, version)
        if key not in self._memo:
            self._memo[key] = self._find(kind, object_id, version)
        return self._memo[key]

    def _find(self, kind: str, object_id: str, version: int) -> Version | None:
        history = self.versions.get((kind, object_id))
        if not history:
            return None
        for v in history:
            if v.version_from <= version and (v.version_to is None or version < v.version_to):
                return v
        later = [v for v in history if v.version_from > version]
        return min(later, key=lambda v: v.version_from) if later else history[-1]

    def name(self, kind: str, object_id: str, version: int) -> str:
        v = self.at(kind, object_id, version)
        return v.name if v else object_id

    def service_level(self, queue_id: str, version: int) -> float:
        key = (queue_id, version)
        if key not in self._levels:
            v = self.at("queue", queue_id, version)
            self._levels[key] = (
                parse_seconds(v.body.get("service_level"), DEFAULT_SERVICE_LEVEL)
                if v is not None
                else DEFAULT_SERVICE_LEVEL
            )
        return self._levels[key]


def normalize_kind(kind: str) -> str:
    """``queues`` and ``queue`` are the same kind in the history."""
    return kind[:-1] if kind.endswith("s") and kind != "presence" else kind


# --- queue figures -------------------------------------------------------------------------


@dataclass
class QueueFigures:
    """Sums and counts for one queue in one interval (a row of report_queue_intervals)."""

    queue_name: str
    offered: int = 0
    handled: int = 0
    abandoned: int = 0
    overflowed: int = 0
    rejected: int = 0
    wait_count: int = 0
    wait_sum: float = 0.0
    wait_max: float = 0.0
    handled_within_sl: int = 0
    abandoned_within_sl: int = 0
    handle_time_sum: float = 0.0

    def merge(self, other: QueueFigures) -> None:
        """Add ``other`` (a later contribution: its name wins)."""
        self.queue_name = other.queue_name
        self.offered += other.offered
        self.handled += other.handled
        self.abandoned += other.abandoned
        self.overflowed += other.overflowed
        self.rejected += other.rejected
        if other.wait_count:
            self.wait_max = (
                max(self.wait_max, other.wait_max) if self.wait_count else other.wait_max
            )
        self.wait_count += other.wait_count
        self.wait_sum += other.wait_sum
        self.handled_within_sl += other.handled_within_sl
        self.abandoned_within_sl += other.abandoned_within_sl
        self.handle_time_sum += other.handle_time_sum

    COUNTS = (
        "offered",
        "handled",
        "abandoned",
        "overflowed",
        "rejected",
        "wait_count",
        "wait_sum",
        "wait_max",
        "handled_within_sl",
        "abandoned_within_sl",
        "handle_time_sum",
    )


def visited_before(record: TaskRecord) -> list[str]:
    """Queues the task left by overflow before the one it ended in, in order, once each."""
    seen: list[str] = []
    for q in record.get("queues") or []:
        if q != record["queue_id"] and q not in seen:
            seen.append(q)
    return seen


class QueueTotals:
    """A batch's queue figures per (15-minute interval, queue), added up task by task.

    Every queue the task visited counts it as offered; the queues it overflowed from count it
    as overflowed. The queue it ended in counts its outcome, its wait, and the service level
    against that queue's threshold (in effect at the task's config version). This runs for
    every ingested record; intervals are keyed by their start in epoch seconds until
    ``figures()`` hands them out as datetimes.
    """

    def __init__(self, names: ConfigView) -> None:
        self._names = names
        self._queues: dict[tuple[str, int], tuple[str, float]] = {}
        self._figures: dict[tuple[int, str], QueueFigures] = {}

    def _queue(self, queue_id: str, version: int) -> tuple[str, float]:
        """The queue's name and service-level threshold at ``version``."""
        key = (queue_id, version)
        found = self._queues.get(key)
        if found is None:
            names = self._names
            found = (
                names.name("queue", queue_id, version),
                names.service_level(queue_id, version),
            )
            self._queues[key] = found
        return found

    def _figure(self, start: int, queue_id: str, name: str) -> QueueFigures:
        key = (start, queue_id)
        fig = self._figures.get(key)
        if fig is None:
            fig = self._figures[key] = QueueFigures(name)
        else:
            fig.queue_name = name  # a later task's name wins, as in QueueFigures.merge
        return fig

    def add(self, record: TaskRecord, arrived: datetime) -> None:
        """Add one ended task that arrived at ``arrived`` (its ``created_at``, UTC)."""
        version = int(record.get("config_version") or 0)
        step = BASE_INTERVAL_MINUTES * 60
        start = int(arrived.timestamp() // step) * step
        final = record["queue_id"]
        queues = record.get("queues")
        if queues and (len(queues) > 1 or queues[0] != final):
            for q in visited_before(record):
                fig = self._figure(start, q, self._queue(q, version)[0])
                fig.offered += 1
                fig.overflowed += 1
        name, threshold = self._queue(final, version)
        fig = self._figure(start, final, name)
        wait = float(record["wait"])
        fig.offered += 1
        status = record["status"]
        if status == "completed":
            fig.handled += 1
            fig.handle_time_sum += float(record["talk_time"]) + float(record["work_time"])
            fig.handled_within_sl += wait <= threshold
        elif status == "abandoned":
            fig.abandoned += 1
            fig.abandoned_within_sl += wait <= threshold
        elif status == "overflowed":
            fig.overflowed += 1
        elif status == "rejected":
            fig.rejected += 1
        fig.wait_max = max(fig.wait_max, wait) if fig.wait_count else wait
        fig.wait_count += 1
        fig.wait_sum += wait

    def figures(self) -> dict[tuple[datetime, str], QueueFigures]:
        return {
            (EPOCH + timedelta(seconds=start), queue_id): fig
            for (start, queue_id), fig in self._figures.items()
        }


def ratio(num: float, den: float, digits: int = 4) -> float | None:
    return round(num / den, digits) if den else None


def queue_row(start: datetime, queue_id: str, f: QueueFigures) -> dict[str, Any]:
    """One row of the queue report (SPEC §6 columns, then ``service_level_2``)."""
    return {
        "interval_start": iso(start),
        "queue_id": queue_id,
        "queue_name": f.queue_name,
        "offered": f.offered,
        "handled": f.handled,
        "abandoned": f.abandoned,
        "overflowed": f.overflowed,
        "rejected": f.rejected,
        "avg_wait": ratio(f.wait_sum, f.wait_count, 3),
        "max_wait": round(f.wait_max, 3) if f.wait_count else None,
        "service_level": ratio(f.handled_within_sl, f.handled),
        "avg_handle_time": ratio(f.handle_time_sum, f.handled, 3),
        "service_level_2": ratio(
            f.handled_within_sl + f.abandoned_within_sl, f.handled + f.abandoned
        ),
    }


def overlap_seconds(start: datetime, end: datetime, lo: datetime, hi: datetime) -> float:
    """Seconds of [start, end) inside [lo, hi)."""
    s = max(start, lo)
    e = min(end, hi)
    return max(0.0, (e - s).total_seconds())


# Expert states grouped for the expert report. ``reserved`` (an offer is out, nothing
# accepted yet) is ready time, not work: it counts as available.
AVAILABLE_STATES = frozenset({"available", "reserved"})
AWAY_STATES = frozenset({"away", "dnd"})
BUSY_STATES = frozenset({"busy", "wrap_up"})
