"""Building rows: a batch of feed records into the value tuples the reporting tables take.

The work is per record (row building and time conversion) and needs no database, so it runs
before the write transaction; times become the text each target's timestamp columns take.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

import orjson

from expertline.db.engine import json_text, sqlite_time
from expertline.records.feed import EXPERT_STATE, TASK_RECORD, ExpertStateRecord, TaskRecord
from expertline.reporting.core import ConfigView, utc

TASK_COLUMNS = (
    "task_id",
    "feed_id",
    "code",
    "external_id",
    "channel",
    "queue_id",
    "queue_name",
    "queues",
    "status",
    "call_disposition",
    "expert_id",
    "caller",
    "dialed_number",
    "created_at",
    "assigned_at",
    "connected_at",
    "ended_at",
    "wait",
    "ring_time",
    "talk_time",
    "work_time",
    "sl_threshold",
    "config_version",
    "node",
)
OFFER_COLUMNS = (
    "offer_id",
    "task_id",
    "expert_id",
    "queue_id",
    "created_at",
    "ended_at",
    "outcome",
)
ATTEMPT_COLUMNS = ("task_id", "seq", "expert_id", "disposition", "at")
STATE_COLUMNS = ("feed_id", "expert_id", "state", "started_at", "ended_at", "config_version")


class PreparedTask(NamedTuple):
    """One task record's rows, values already in the form the target database takes."""

    record: TaskRecord
    arrived: datetime  # created_at, UTC: the queue interval it counts in
    row: tuple[Any, ...]  # report_tasks, in TASK_COLUMNS order
    offers: list[tuple[Any, ...]]
    attempts: list[tuple[Any, ...]]


@dataclass
class Batch:
    """The taken feed rows of one batch, built into table rows.

    Built before the write transaction (the work is per record: row building and time
    conversion), against the configuration names known then; the transaction builds it again
    in the rare case that it copied new configuration versions.
    """

    names: ConfigView | None
    time_of: Callable[[str], Any]
    tasks: dict[str, PreparedTask] = field(default_factory=dict)  # first record per task id
    task_records: int = 0  # records read, repeats included
    states: list[tuple[int, ExpertStateRecord]] = field(default_factory=list)

    @classmethod
    def build(
        cls, rows: Sequence[tuple[int, str, Any]], names: ConfigView | None, sqlite_target: bool
    ) -> Batch:
        batch = cls(names, time_converter(sqlite_target))
        view = names or ConfigView()
        to_json = json_text
        time_of = batch.time_of
        tasks = batch.tasks
        queue_memo: dict[tuple[str, int], tuple[str, float]] = {}
        for fid, kind, rec in rows:
            if rec is None:
                continue
            if kind == EXPERT_STATE:
                batch.states.append((fid, rec))
                continue
            if kind != TASK_RECORD:
                continue
            batch.task_records += 1
            task_id = rec["task_id"]
            if task_id in tasks:
                continue
            version = int(rec.get("config_version") or 0)
            queue_id = rec["queue_id"]
            queue = queue_memo.get((queue_id, version))
            if queue is None:
                queue = queue_memo[(queue_id, version)] = (
                    view.name("queue", queue_id, version),
                    view.service_level(queue_id, version),
                )
            created = rec["created_at"]
            get = rec.get
            offers = [
                (
                    o["offer_id"],
                    task_id,
                    o["expert_id"],
                    o.get("queue_id") or queue_id,
                    time_of(o["created_at"]),
                    time_of(o["ended_at"]) if o.get("ended_at") else None,
                    o["outcome"],
                )
                for o in get("offers") or ()
            ]
            attempts = [
                (task_id, seq, a["expert_id"], int(a["disposition"]), time_of(a["at"]))
                for seq, a in enumerate(get("attempts") or (), start=1)
            ]
            row = (
                task_id,
                fid,
                get("code") or "",
                get("external_id"),
                get("channel") or "voice",
                queue_id,
                queue[0],
                to_json(list(get("queues") or [queue_id])),
                rec["status"],
                int(rec["call_disposition"]),
                get("expert_id"),
                get("caller"),
                get("dialed_number"),
                time_of(created),
                time_of(get("assigned_at")) if get("assigned_at") else None,
                time_of(get("connected_at")) if get("connected_at") else None,
                time_of(rec["ended_at"]),
                float(get("wait") or 0.0),
                float(get("ring_time") or 0.0),
                float(get("talk_time") or 0.0),
                float(get("work_time") or 0.0),
                queue[1],
                version,
                get("node") or "",
            )
            tasks[task_id] = PreparedTask(rec, utc(created), row, offers, attempts)
        return batch


def json_value(text: str | bytes) -> Any:
    """A feed row's JSON body: orjson, with the standard library for the ``NaN`` and
    ``Infinity`` an older writer may have left (orjson refuses them). orjson reads integers
    beyond 64 bits as floats; no field reporting reads holds one."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def time_converter(sqlite_target: bool) -> Callable[[str], Any]:
    """Converts a record's ISO 8601 times to the text the target's timestamp columns take,
    each distinct text once (the same instants recur across a task's fields, its offers and
    expert states)."""
    seen: dict[str, Any] = {}
    convert = sqlite_time_text if sqlite_target else pg_time_text

    def time_of(value: str) -> Any:
        found = seen.get(value)
        if found is None:
            found = seen[value] = convert(value)
        return found

    return time_of


# A time in the runtime's own form: UTC, extended, with a fraction
# (``2026-11-25T10:00:00.125+00:00``). Hour 24 is left to the general path: a parser may take it
# for midnight of the next day.
_RUNTIME_TIME = re.compile(
    r"(\d{4}-\d\d-\d\d)T(?!24)(\d\d:\d\d:\d\d)\.(\d{1,6})(?:Z|\+00:00)", re.ASCII
)


def sqlite_time_text(value: str) -> str:
    """An ISO 8601 time as SQLAlchemy stores a DateTime on SQLite: UTC,
    ``YYYY-MM-DD HH:MM:SS.ffffff`` (rows read back through SQLAlchemy are identical).

    The text is validated by parsing it whatever its form; the runtime's own form then only
    needs its separator changed and its fraction padded, any other form is formatted.
    """
    moment = datetime.fromisoformat(value)
    form = _RUNTIME_TIME.fullmatch(value)
    if form is None:
        return sqlite_time(utc(moment))
    day, clock, fraction = form.groups()
    return f"{day} {clock}.{fraction:0<6}"


def pg_time_text(value: str) -> str:
    """An ISO 8601 time as text for a ``timestamptz`` column in COPY: the text itself in the
    runtime's form (validated by parsing it; UTC, explicit offset), else the parsed time
    formatted with its offset. Text, because psycopg formats datetimes for COPY several times
    slower."""
    moment = datetime.fromisoformat(value)
    return value if _RUNTIME_TIME.fullmatch(value) else utc(moment).isoformat()
