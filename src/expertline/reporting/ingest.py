"""Ingestion: the runtime's feed and configuration history into the reporting tables.

Each batch is one transaction on the reporting database that (1) locks and reads the feed
cursor, (2) copies new configuration versions, (3) writes the task records and expert state
changes that follow the cursor, and (4) moves the cursor. A crash anywhere before the commit
leaves nothing behind, and the rows are read again. The writes are idempotent too (tasks by
``task_id``, states by feed id), so a cursor moved back never duplicates anything.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson
from sqlalchemy import (
    JSON,
    BigInteger,
    Connection,
    DateTime,
    Engine,
    Integer,
    String,
    Table,
    and_,
    case,
    column,
    func,
    insert,
    select,
    table,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from expertline.db.engine import json_text, sqlite_time
from expertline.records.feed import EXPERT_STATE, TASK_RECORD, ExpertStateRecord, TaskRecord
from expertline.reporting.core import (
    ConfigView,
    GapWatch,
    QueueFigures,
    QueueTotals,
    Version,
    normalize_kind,
    plan_window,
    utc,
)
from expertline.reporting.tables import (
    report_attempts,
    report_config_history,
    report_cursors,
    report_expert_states,
    report_offers,
    report_queue_intervals,
    report_tasks,
)

log = logging.getLogger(__name__)

FEED_CURSOR = "feed"
CONFIG_CURSOR = "config"

# The runtime's tables, as far as reporting reads them (documented shape; see records/feed.py).
routing_feed = table(
    "routing_feed",
    column("id", BigInteger),
    column("type", String),
    column("task_id", String),
    column("expert_id", String),
    column("data", JSON),
    column("created_at", DateTime(timezone=True)),
)
config_versions = table(
    "config_versions",
    column("version", Integer),
    column("applied_at", DateTime(timezone=True)),
)
config_changes = table(
    "config_changes",
    column("id", BigInteger),
    column("version", Integer),
    column("kind", String),
    column("object_id", String),
    column("op", String),
    column("before", JSON),
    column("after", JSON),
)


@dataclass(frozen=True)
class BatchResult:
    """What one batch did, in numbers and one sentence."""

    tasks: int
    duplicates: int
    states: int
    config_versions: int
    cursor: int
    read: int
    reason: str

    @property
    def busy(self) -> bool:
        return self.read > 0


class Ingester:
    """Moves feed rows from the runtime database (``source``) to the reporting one (``target``)."""

    def __init__(
        self,
        source: Engine,
        target: Engine,
        *,
        batch_size: int = 2000,
        gap_grace: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.target = target
        self.batch_size = batch_size
        self.gap_grace = gap_grace
        self._monotonic = monotonic
        self._gap: GapWatch | None = None
        self._names: ConfigView | None = None
        self._same_db = source is target or str(source.url) == str(target.url)
        self._sqlite_target = target.dialect.name == "sqlite"

    # -- public ---------------------------------------------------------------------------

    def run_once(self) -> BatchResult:
        """Ingest one batch; returns what was done.

        The feed is read and its rows are built before the write transaction (a long read must
        not hold the write lock the runtime needs: on SQLite there is one per database), then
        the transaction locks the cursor first and checks that it has not moved meanwhile.
        """
        for _ in range(3):
            cursor = self.cursor()
            rows = self._read_feed(cursor)
            window = plan_window(
                cursor, [r[0] for r in rows], self._gap, self._monotonic(), self.gap_grace
            )
            taken = rows[: window.take]
            batch = Batch.build(taken, self._names, self._sqlite_target)
            with self.target.begin() as conn:
                if self._lock_cursor(conn, FEED_CURSOR) != cursor:
                    log.info("reporting cursor moved while reading; decision=read again")
                    continue
                synced = self._sync_config(conn)
                if batch.names is not self._names:  # names loaded or changed: build again
                    batch = Batch.build(taken, self._names, self._sqlite_target)
                self._gap = window.gap
                new_tasks, dupes = self._write_tasks(conn, batch)
                new_states = self._write_states(conn, batch)
                if window.cursor != cursor:
                    self._set_cursor(conn, FEED_CURSOR, window.cursor)
            break
        else:
            raise RuntimeError("the reporting cursor kept moving: is another ingester running?")
        result = BatchResult(
            new_tasks, dupes, new_states, synced, window.cursor, len(taken), window.reason
        )
        if result.busy or synced:
            log.info(
                "reporting batch ingested tasks=%d duplicates=%d states=%d config_versions=%d "
                "cursor=%d decision=%r",
                new_tasks,
                dupes,
                new_states,
                synced,
                window.cursor,
                window.reason,
            )
        return result

    def run_until_idle(self, max_batches: int = 1_000_000) -> int:
        """Ingest until the feed is drained (or a hole blocks); returns batches run."""
        for n in range(1, max_batches + 1):
            result = self.run_once()
            if result.read < self.batch_size:
                return n
        return max_batches

    def cursor(self) -> int:
        with self.target.connect() as conn:
            value = conn.execute(
                select(report_cursors.c.position).where(report_cursors.c.consumer == FEED_CURSOR)
            ).scalar()
        return int(value or 0)

    # -- cursor -----------------------------------------------------------------------------

    def _lock_cursor(self, conn: Connection, consumer: str) -> int:
        """Read the cursor holding the lock that serializes ingesters: the row lock on
        PostgreSQL; on SQLite the database write lock, taken by a first statement that
        writes (so the transaction never has to upgrade a stale read snapshot)."""
        query = select(report_cursors.c.position).where(report_cursors.c.consumer == consumer)
        if conn.dialect.name == "postgresql":
            query = query.with_for_update()
        elif conn.dialect.name == "sqlite":
            conn.execute(
                update(report_cursors)
                .where(report_cursors.c.consumer == consumer)
                .values(updated_at=report_cursors.c.updated_at)
            )
        value = conn.execute(query).scalar()
        if value is None:
            conn.execute(
                insert(report_cursors).values(
                    consumer=consumer, position=0, updated_at=datetime.now(UTC)
                )
            )
            return 0
        return int(value)

    def _set_cursor(self, conn: Connection, consumer: str, position: int) -> None:
        conn.execute(
            update(report_cursors)
            .where(report_cursors.c.consumer == consumer)
            .values(position=position, updated_at=datetime.now(UTC))
        )

    # -- feed -------------------------------------------------------------------------------

    def _read_feed(self, cursor: int) -> list[tuple[int, str, Any]]:
        """The rows after ``cursor``, through the driver: JSON decoded here with orjson
        (SQLAlchemy's per-row result processing was a large share of the batch)."""
        pg = self.source.dialect.name == "postgresql"
        mark = "%s" if pg else "?"
        # Other types share the id sequence (needed to see holes) but not their bodies.
        sql = (
            f"SELECT id, type, CASE WHEN type IN ({mark}, {mark}) "
            f"THEN {'data::text' if pg else 'data'} END FROM routing_feed "
            f"WHERE id > {mark} ORDER BY id LIMIT {mark}"
        )
        with self.source.connect() as src:
            read = src.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            try:
                read.execute(sql, (TASK_RECORD, EXPERT_STATE, cursor, self.batch_size))
                rows = read.fetchall()
            finally:
                read.close()
        return [
            (int(fid), str(kind), None if body is None else json_value(body))
            for fid, kind, body in rows
        ]

    # -- configuration history --------------------------------------------------------------

    def _sync_config(self, conn: Connection) -> int:
        """Copy configuration versions newer than the config cursor; returns how many."""
        done = self._lock_cursor(conn, CONFIG_CURSOR)
        if self._same_db:
            count = self._copy_versions(conn, conn, done)
        else:
            with self.source.connect() as src:
                count = self._copy_versions(src, conn, done)
        if count or self._names is None:
            self._names = load_names(conn)
        return count

    def _copy_versions(self, src: Connection, dst: Connection, done: int) -> int:
        versions = src.execute(
            select(config_versions.c.version, config_versions.c.applied_at)
            .where(config_versions.c.version > done)
            .order_by(config_versions.c.version)
        ).all()
        if not versions:
            return 0
        changes = src.execute(
            select(
                config_changes.c.version,
                config_changes.c.kind,
                config_changes.c.object_id,
                config_changes.c.op,
                config_changes.c.after,
            )
            .where(config_changes.c.version > done)
            .order_by(config_changes.c.version, config_changes.c.id)
        ).all()
        by_version: dict[int, list[Any]] = {}
        for ch in changes:
            by_version.setdefault(int(ch.version), []).append(ch)
        last = done
        for version, applied_at in versions:
            at = utc(applied_at)
            for ch in by_version.get(int(version), []):
                apply_change(dst, int(version), at, ch.kind, ch.object_id, ch.op, ch.after)
            last = int(version)
        self._set_cursor(dst, CONFIG_CURSOR, last)
        return len(versions)

    # -- tasks ------------------------------------------------------------------------------

    def _write_tasks(self, conn: Connection, batch: Batch) -> tuple[int, int]:
        if not batch.tasks:
            return 0, 0
        existing = batch.tasks.keys() & set(
            _existing(conn, report_tasks.name, "task_id", list(batch.tasks), "text")
        )
        fresh = [t for tid, t in batch.tasks.items() if tid not in existing]
        dupes = batch.task_records - len(fresh)
        if dupes:
            log.info(
                "reporting skipped duplicate task records count=%d reason=already ingested", dupes
            )
        if not fresh:
            return 0, dupes
        insert_rows(conn, report_tasks, TASK_COLUMNS, [t.row for t in fresh])
        insert_rows(conn, report_offers, OFFER_COLUMNS, [o for t in fresh for o in t.offers])
        insert_rows(conn, report_attempts, ATTEMPT_COLUMNS, [a for t in fresh for a in t.attempts])
        totals = QueueTotals(batch.names or ConfigView())
        for t in fresh:
            totals.add(t.record, t.arrived)
        merge_queue_figures(conn, totals.figures())
        return len(fresh), dupes

    # -- expert states ----------------------------------------------------------------------

    def _write_states(self, conn: Connection, batch: Batch) -> int:
        states = batch.states
        if not states:
            return 0
        existing = set(
            _existing(
                conn, report_expert_states.name, "feed_id", [fid for fid, _ in states], "bigint"
            )
        )
        time_of = batch.time_of
        by_expert: dict[str, list[tuple[int, ExpertStateRecord]]] = {}
        for fid, s in states:
            if fid not in existing:
                by_expert.setdefault(s["expert_id"], []).append((fid, s))
        rows: list[tuple[Any, ...]] = []
        closes: list[tuple[Any, ...]] = []
        for expert_id, changes in by_expert.items():
            first_fid, first = changes[0]
            # The state that was open ends when the first new one starts.
            closes.append((time_of(first["at"]), expert_id, first_fid))
            for i, (fid, s) in enumerate(changes):
                nxt = changes[i + 1][1]["at"] if i + 1 < len(changes) else None
                rows.append(
                    (
                        fid,
                        expert_id,
                        s["state"],
                        time_of(s["at"]),
                        time_of(nxt) if nxt else None,
                        int(s.get("config_version") or 0),
                    )
                )
        if closes:
            mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
            conn.exec_driver_sql(
                f"UPDATE {report_expert_states.name} SET ended_at = {mark} "
                f"WHERE expert_id = {mark} AND ended_at IS NULL AND feed_id < {mark}",
                closes,
            )
        insert_rows(conn, report_expert_states, STATE_COLUMNS, rows)
        return len(rows)


def apply_change(
    conn: Connection,
    version: int,
    at: datetime,
    kind: str,
    object_id: str,
    op: str,
    after: dict[str, Any] | None,
) -> None:
    """Record one configuration change: close the object's open row, open a new one."""
    kind = normalize_kind(kind)
    h = report_config_history
    conn.execute(
        update(h)
        .where(and_(h.c.kind == kind, h.c.object_id == object_id, h.c.version_to.is_(None)))
        .values(version_to=version, valid_to=at)
    )
    if op not in ("remove", "delete") and after is not None:
        name = str(after.get("name") or object_id) if isinstance(after, dict) else object_id
        conn.execute(
            insert(h).values(
                kind=kind,
                object_id=object_id,
                version_from=version,
                version_to=None,
                valid_from=at,
                valid_to=None,
                name=name,
                body=after,
            )
        )


def load_names(conn: Connection) -> ConfigView:
    h = report_config_history
    view = ConfigView()
    rows = conn.execute(
        select(h.c.kind, h.c.object_id, h.c.version_from, h.c.version_to, h.c.name, h.c.body)
        .where(h.c.kind.in_(("queue", "expert")))
        .order_by(h.c.kind, h.c.object_id, h.c.version_from)
    ).all()
    for r in rows:
        view.add(
            r.kind,
            r.object_id,
            Version(
                r.version_from, r.version_to, r.name, r.body if isinstance(r.body, dict) else {}
            ),
        )
    return view


def merge_queue_figures(conn: Connection, totals: dict[tuple[datetime, str], QueueFigures]) -> None:
    """Add a batch's totals to report_queue_intervals: one upsert per (interval, queue).

    The database adds them to the stored sums (found by the primary key whatever the table
    statistics say: a long catch-up grows the table faster than they are refreshed); the
    later name wins and ``wait_max`` keeps the larger wait, as ``QueueFigures.merge`` does.
    """
    if not totals:
        return
    q = report_queue_intervals
    pg = conn.dialect.name == "postgresql"
    stmt = (postgresql.insert if pg else sqlite.insert)(q)
    new = stmt.excluded
    larger = func.greatest if pg else func.max  # SQLite's two-argument max() is a scalar
    wait_max = case(
        (new.wait_count == 0, q.c.wait_max),
        (q.c.wait_count == 0, new.wait_max),
        else_=larger(q.c.wait_max, new.wait_max),
    )
    added = {c: q.c[c] + new[c] for c in QueueFigures.COUNTS if c != "wait_max"}
    stmt = stmt.on_conflict_do_update(
        index_elements=[q.c.interval_start, q.c.queue_id],
        set_={"queue_name": new.queue_name, **added, "wait_max": wait_max},
    )
    conn.execute(
        stmt,
        [
            {
                "interval_start": start,
                "queue_id": queue_id,
                "queue_name": fig.queue_name,
                **{c: getattr(fig, c) for c in QueueFigures.COUNTS},
            }
            for (start, queue_id), fig in totals.items()
        ],
    )


# -- building rows --------------------------------------------------------------------------

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


# -- writing rows ---------------------------------------------------------------------------


def insert_rows(
    conn: Connection, target: Table, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]
) -> None:
    """Insert value tuples built by ``Batch`` through the driver: COPY on PostgreSQL (several
    times faster than executemany for a few thousand rows), executemany on SQLite."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            with cursor.copy(f"COPY {target.name} ({', '.join(columns)}) FROM STDIN") as copy:
                for values in rows:
                    copy.write_row(values)
        finally:
            cursor.close()
        return
    marks = ", ".join("?" for _ in columns)
    conn.exec_driver_sql(
        f"INSERT INTO {target.name} ({', '.join(columns)}) VALUES ({marks})", list(rows)
    )


def _existing(
    conn: Connection, table_name: str, key: str, values: list[Any], pg_type: str
) -> list[Any]:
    """The ``values`` already present in ``table_name.key``, with one parameter whatever the
    batch size: an array on PostgreSQL, a JSON array on SQLite.

    On PostgreSQL each value is one probe of the key's index. A join or ``= ANY`` is planned
    from the table statistics, which a long catch-up outgrows before autovacuum refreshes
    them: the planner then scans the whole table for every batch."""
    if conn.dialect.name == "postgresql":
        sql = (
            f"SELECT t.{key} FROM unnest(%s::{pg_type}[]) AS u(v) CROSS JOIN LATERAL "
            f"(SELECT {key} FROM {table_name} WHERE {key} = u.v LIMIT 1) AS t"
        )
        return list(conn.exec_driver_sql(sql, (values,)).scalars())
    sql = f"SELECT {key} FROM {table_name} WHERE {key} IN (SELECT value FROM json_each(?))"
    return list(conn.exec_driver_sql(sql, (json_text(values),)).scalars())


def feed_head(engine: Engine) -> int:
    """The highest feed id (0 when empty)."""
    with engine.connect() as conn:
        return int(conn.execute(select(func.max(routing_feed.c.id))).scalar() or 0)
