"""The three reports (SPEC §6): queues per interval, experts, task detail.

Each report is a list of plain dicts with the SPEC's columns in the SPEC's order; the REST API,
the CSV writer, the CLI and the web pages all print these same rows. A range ``[from, to)``
selects tasks by arrival (``created_at``), queue intervals by their start, expert states by
their overlap with the range.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import DateTime, Engine, Integer, and_, cast, func, or_, select, tuple_, type_coerce

from expertline.errors import InvalidInput, Problem
from expertline.instants import iso
from expertline.limits import TASK_ID, text_problem
from expertline.reporting.core import (
    AVAILABLE_STATES,
    AWAY_STATES,
    BASE_INTERVAL_MINUTES,
    BUSY_STATES,
    QueueFigures,
    overlap_seconds,
    parse_interval,
    queue_row,
    ratio,
    utc,
)
from expertline.reporting.tables import (
    report_config_history,
    report_expert_states,
    report_offers,
    report_queue_intervals,
    report_tasks,
)

QUEUE_COLUMNS = (
    "interval_start",
    "queue_id",
    "queue_name",
    "offered",
    "handled",
    "abandoned",
    "overflowed",
    "rejected",
    "avg_wait",
    "max_wait",
    "service_level",
    "avg_handle_time",
    "service_level_2",
)
EXPERT_COLUMNS = (
    "expert_id",
    "expert_name",
    "offers",
    "accepted",
    "declined",
    "timed_out",
    "handled",
    "handle_time",
    "available_time",
    "away_time",
    "busy_time",
    "utilization",
)
TASK_COLUMNS = (
    "task_id",
    "queue_id",
    "queue_name",
    "status",
    "call_disposition",
    "expert_id",
    "created_at",
    "ended_at",
    "wait",
    "talk_time",
    "offers",
)
COLUMNS = {"queues": QUEUE_COLUMNS, "experts": EXPERT_COLUMNS, "tasks": TASK_COLUMNS}
MAX_RANGE = timedelta(days=366)
# Times a report may name: every record falls in here, and interval arithmetic near the ends
# of Python's calendar (years 1 and 9999) cannot overflow.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(3000, 1, 1, tzinfo=UTC)


def parse_instant(value: str) -> datetime:
    """An ISO 8601 time as given by a user, in UTC (naive means UTC), within
    ``EARLIEST``..``LATEST``; ValueError says what is wrong without echoing a long value."""
    shown = repr(value) if len(value) <= 40 else f"{value[:40]!r}…({len(value):,} chars)"
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(
            f"expected an ISO 8601 date or time (2026-11-25T10:00Z), got {shown}"
        ) from None
    try:
        at = utc(parsed)
    except OverflowError:  # the offset takes it past year 1 or 9999
        at = None
    if at is None or not EARLIEST <= at <= LATEST:
        raise ValueError(f"{shown} is out of range: give a time from 1970 to 3000 (UTC)")
    return at


@dataclass(frozen=True)
class ReportRange:
    """A validated report request: [start, end) and an interval in minutes."""

    start: datetime
    end: datetime
    interval: int = 15


def parse_range(
    start: str | None,
    end: str | None,
    interval: str | None = None,
    *,
    now: datetime | None = None,
) -> ReportRange:
    """Validate ``from``/``to``/``interval`` as given by a user; InvalidInput lists every
    problem. Defaults: the last 24 hours, 15-minute intervals. Naive times are UTC."""
    problems: list[Problem] = []
    now = utc(now or datetime.now(UTC))
    parsed: dict[str, datetime | None] = {}
    for key, value in (("from", start), ("to", end)):
        if value is None or not value.strip():
            parsed[key] = None
            continue
        try:
            parsed[key] = parse_instant(value)
        except ValueError as exc:
            problems.append(Problem(key, str(exc)))
    minutes = 15
    if interval is not None and interval.strip():
        try:
            minutes = parse_interval(interval)
        except ValueError as exc:
            problems.append(Problem("interval", str(exc)))
    if problems:
        raise InvalidInput("invalid report request", problems)
    hi = parsed.get("to") or now
    lo = parsed.get("from") or hi - timedelta(days=1)
    if lo >= hi:
        raise InvalidInput("invalid report request", [Problem("from", "must be before `to`")])
    if hi - lo > MAX_RANGE:
        raise InvalidInput(
            "invalid report request", [Problem("to", "a report covers at most 366 days")]
        )
    return ReportRange(lo, hi, minutes)


# --- queues --------------------------------------------------------------------------------


def queue_figures(engine: Engine, rng: ReportRange) -> dict[tuple[datetime, str], QueueFigures]:
    """Sums per (interval start, queue id). 30/60-minute rows add up the stored 15-minute
    rows in SQL; the name of each is that of its latest 15-minute row. A 30-day range is at
    most 2,880 stored rows per queue, however many tasks they count."""
    q = report_queue_intervals
    counts = QueueFigures.COUNTS
    in_range = and_(q.c.interval_start >= rng.start, q.c.interval_start < rng.end)
    with engine.connect() as conn:
        if rng.interval == BASE_INTERVAL_MINUTES:
            query = (
                select(q.c.interval_start, q.c.queue_id, q.c.queue_name, *(q.c[c] for c in counts))
                .where(in_range)
                .order_by(q.c.interval_start, q.c.queue_id)
            )
        else:
            bucket = _bucket(conn.dialect.name, rng.interval * 60).label("bucket")
            latest = (
                func.first_value(q.c.queue_name)
                .over(partition_by=(bucket, q.c.queue_id), order_by=q.c.interval_start.desc())
                .label("latest_name")
            )
            inner = select(bucket, q.c.queue_id, latest, *(q.c[c] for c in counts)).where(in_range)
            sub = inner.subquery()
            sums = [
                (func.max(sub.c[c]) if c == "wait_max" else func.sum(sub.c[c])).label(c)
                for c in counts
            ]
            query = (
                select(sub.c.bucket, sub.c.queue_id, func.max(sub.c.latest_name), *sums)
                .group_by(sub.c.bucket, sub.c.queue_id)
                .order_by(sub.c.bucket, sub.c.queue_id)
            )
        rows = conn.execute(query).all()
    return {
        (utc(start), queue_id): QueueFigures(name, **dict(zip(counts, values, strict=True)))
        for start, queue_id, name, *values in rows
    }


def _bucket(dialect: str, step: int) -> Any:
    """SQL for the start of the ``step``-second interval holding interval_start (UTC)."""
    col = report_queue_intervals.c.interval_start
    if dialect == "postgresql":
        return type_coerce(
            func.to_timestamp(func.floor(func.extract("epoch", col) / step) * step),
            DateTime(timezone=True),
        )
    if dialect == "sqlite":
        seconds = cast(func.strftime("%s", col), Integer)
        return type_coerce(
            func.strftime("%Y-%m-%d %H:%M:%S.000000", (seconds // step) * step, "unixepoch"),
            DateTime(timezone=True),
        )
    raise NotImplementedError(f"queue report rollup on {dialect}")


def queue_report(engine: Engine, rng: ReportRange) -> list[dict[str, Any]]:
    """Queue figures per interval, oldest first, then by queue id."""
    return [queue_row(start, qid, fig) for (start, qid), fig in queue_figures(engine, rng).items()]


# --- experts -------------------------------------------------------------------------------


def expert_report(
    engine: Engine, rng: ReportRange, *, now: datetime | None = None
) -> list[dict[str, Any]]:
    """Per expert: offers and outcomes, handled tasks, time in each state, utilization.

    utilization = busy_time / (available_time + busy_time): the share of ready time spent on
    tasks. A state still open counts up to ``min(to, now)``.
    """
    now = utc(now or datetime.now(UTC))
    horizon = min(rng.end, now)
    o, t, s = report_offers, report_tasks, report_expert_states
    experts: dict[str, dict[str, Any]] = {}

    def row(expert_id: str) -> dict[str, Any]:
        if expert_id not in experts:
            experts[expert_id] = {
                "offers": 0,
                "accepted": 0,
                "declined": 0,
                "timed_out": 0,
                "handled": 0,
                "handle_time": 0.0,
                "available_time": 0.0,
                "away_time": 0.0,
                "busy_time": 0.0,
            }
        return experts[expert_id]

    with engine.connect() as conn:
        for expert_id, outcome, count in conn.execute(
            select(o.c.expert_id, o.c.outcome, func.count())
            .where(and_(o.c.created_at >= rng.start, o.c.created_at < rng.end))
            .group_by(o.c.expert_id, o.c.outcome)
        ):
            r = row(expert_id)
            r["offers"] += count
            key = {"accepted": "accepted", "declined": "declined", "timeout": "timed_out"}
            if outcome in key:
                r[key[outcome]] += count
        for expert_id, count, handle in conn.execute(
            select(t.c.expert_id, func.count(), func.sum(t.c.talk_time + t.c.work_time))
            .where(
                and_(
                    t.c.created_at >= rng.start,
                    t.c.created_at < rng.end,
                    t.c.status == "completed",
                    t.c.expert_id.is_not(None),
                )
            )
            .group_by(t.c.expert_id)
        ):
            r = row(expert_id)
            r["handled"] += count
            r["handle_time"] += float(handle or 0.0)
        for expert_id, state, started, ended in conn.execute(
            select(s.c.expert_id, s.c.state, s.c.started_at, s.c.ended_at).where(
                and_(
                    s.c.started_at < horizon,
                    or_(s.c.ended_at.is_(None), s.c.ended_at > rng.start),
                )
            )
        ):
            end = utc(ended) if ended is not None else horizon
            seconds = overlap_seconds(utc(started), end, rng.start, horizon)
            r = row(expert_id)
            if state in AVAILABLE_STATES:
                r["available_time"] += seconds
            elif state in AWAY_STATES:
                r["away_time"] += seconds
            elif state in BUSY_STATES:
                r["busy_time"] += seconds
        names = _names_at(conn, "expert", list(experts), horizon)
    out = []
    for expert_id in sorted(experts):
        r = experts[expert_id]
        out.append(
            {
                "expert_id": expert_id,
                "expert_name": names.get(expert_id, expert_id),
                "offers": r["offers"],
                "accepted": r["accepted"],
                "declined": r["declined"],
                "timed_out": r["timed_out"],
                "handled": r["handled"],
                "handle_time": round(r["handle_time"], 3),
                "available_time": round(r["available_time"], 3),
                "away_time": round(r["away_time"], 3),
                "busy_time": round(r["busy_time"], 3),
                "utilization": ratio(r["busy_time"], r["available_time"] + r["busy_time"]),
            }
        )
    return out


def _names_at(conn: Any, kind: str, ids: list[str], at: datetime) -> dict[str, str]:
    """Each object's name in effect at ``at`` (else its latest name)."""
    if not ids:
        return {}
    h = report_config_history
    names: dict[str, tuple[bool, datetime, str]] = {}
    for object_id, name, valid_from, valid_to in conn.execute(
        select(h.c.object_id, h.c.name, h.c.valid_from, h.c.valid_to).where(
            and_(h.c.kind == kind, h.c.object_id.in_(ids))
        )
    ):
        start = utc(valid_from)
        current = start <= at and (valid_to is None or at < utc(valid_to))
        best = names.get(object_id)
        if best is None or (current, start) > best[:2]:
            names[object_id] = (current, start, name)
    return {k: v[2] for k, v in names.items()}


# --- tasks ---------------------------------------------------------------------------------


def task_report(
    engine: Engine, rng: ReportRange, *, limit: int | None = None, after: str | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """Ended tasks that arrived in the range, oldest first, each with its offers.

    ``limit``/``after`` page through large ranges; the second value is the ``after`` of the
    next page (None at the end).
    """
    t, o = report_tasks, report_offers
    query = (
        select(
            t.c.task_id,
            t.c.code,
            t.c.queue_id,
            t.c.queue_name,
            t.c.status,
            t.c.call_disposition,
            t.c.expert_id,
            t.c.created_at,
            t.c.ended_at,
            t.c.wait,
            t.c.talk_time,
        )
        .where(and_(t.c.created_at >= rng.start, t.c.created_at < rng.end))
        .order_by(t.c.created_at, t.c.task_id)
    )
    if after:
        at_text, _, task_id = after.partition("|")
        try:
            at = parse_instant(at_text)
            if text_problem(task_id, TASK_ID):
                raise ValueError("not a task id")
        except ValueError as exc:
            raise InvalidInput(
                "invalid report request", [Problem("after", "not a cursor from `next`")]
            ) from exc
        query = query.where(tuple_(t.c.created_at, t.c.task_id) > tuple_(at, task_id))
    if limit is not None:
        query = query.limit(limit + 1)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
        more = limit is not None and len(rows) > limit
        rows = rows[:limit] if limit is not None else rows
        offers: dict[str, list[dict[str, Any]]] = {}
        ids = [r.task_id for r in rows]
        for chunk in _chunks(ids, 900):
            for r in conn.execute(
                select(
                    o.c.task_id,
                    o.c.offer_id,
                    o.c.expert_id,
                    o.c.created_at,
                    o.c.ended_at,
                    o.c.outcome,
                )
                .where(o.c.task_id.in_(chunk))
                .order_by(o.c.created_at, o.c.offer_id)
            ):
                offers.setdefault(r.task_id, []).append(
                    {
                        "offer_id": r.offer_id,
                        "expert_id": r.expert_id,
                        "created_at": iso(r.created_at),
                        "ended_at": iso(r.ended_at),
                        "outcome": r.outcome,
                    }
                )
    items = [
        {
            "task_id": r.task_id,
            "code": r.code,
            "queue_id": r.queue_id,
            "queue_name": r.queue_name,
            "status": r.status,
            "call_disposition": r.call_disposition,
            "expert_id": r.expert_id,
            "created_at": iso(r.created_at),
            "ended_at": iso(r.ended_at),
            "wait": round(float(r.wait), 3),
            "talk_time": round(float(r.talk_time), 3),
            "offers": offers.get(r.task_id, []),
        }
        for r in rows
    ]
    # The cursor keeps the full stored precision (the text form has milliseconds only).
    nxt = f"{utc(rows[-1].created_at).isoformat()}|{rows[-1].task_id}" if more and rows else None
    return items, nxt


def task_detail(engine: Engine, task_id: str) -> dict[str, Any] | None:
    """One ended task's whole report row with its offers (None when reporting has none)."""
    t, o = report_tasks, report_offers
    with engine.connect() as conn:
        row = conn.execute(select(t).where(t.c.task_id == task_id)).first()
        if row is None:
            return None
        offers = conn.execute(
            select(o).where(o.c.task_id == task_id).order_by(o.c.created_at, o.c.offer_id)
        ).all()
    task = {k: iso(v) if isinstance(v, datetime) else v for k, v in row._mapping.items()}
    task.pop("feed_id", None)
    task["offers"] = [
        {k: iso(v) if isinstance(v, datetime) else v for k, v in r._mapping.items()} for r in offers
    ]
    return task


def _chunks(values: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(values), size):
        yield values[i : i + size]


# --- output --------------------------------------------------------------------------------


def flat(name: str, row: dict[str, Any]) -> dict[str, Any]:
    """A row for CSV and tables: offers become ``expert:outcome`` separated by ``;``."""
    if name == "tasks":
        row = dict(row)
        row["offers"] = ";".join(f"{o['expert_id']}:{o['outcome']}" for o in row["offers"])
    return row


def to_csv(name: str, rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    """CSV text, header first, one chunk per row (so large reports can stream)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    columns = COLUMNS[name]
    writer.writerow(columns)
    yield buf.getvalue()
    for row in rows:
        buf.seek(0)
        buf.truncate()
        r = flat(name, row)
        writer.writerow(["" if r[c] is None else r[c] for c in columns])
        yield buf.getvalue()


def to_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps({"items": rows}, indent=2)
