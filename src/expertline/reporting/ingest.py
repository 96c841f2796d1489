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
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

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
    bindparam,
    case,
    column,
    func,
    insert,
    select,
    table,
    type_coerce,
    update,
)

from expertline.records.feed import EXPERT_STATE, TASK_RECORD, ExpertStateRecord, TaskRecord
from expertline.reporting.core import (
    ConfigView,
    GapWatch,
    QueueFigures,
    Version,
    add_up,
    normalize_kind,
    plan_window,
    task_contribution,
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

    # -- public ---------------------------------------------------------------------------

    def run_once(self) -> BatchResult:
        """Ingest one batch; returns what was done.

        The feed is read before the write transaction (a long read must not hold the write
        lock the runtime needs: on SQLite there is one per database), then the transaction
        locks the cursor first and checks that it has not moved meanwhile.
        """
        for _ in range(3):
            cursor = self.cursor()
            rows = self._read_feed(cursor)
            with self.target.begin() as conn:
                if self._lock_cursor(conn, FEED_CURSOR) != cursor:
                    log.info("reporting cursor moved while reading; decision=read again")
                    continue
                synced = self._sync_config(conn)
                window = plan_window(
                    cursor, [r[0] for r in rows], self._gap, self._monotonic(), self.gap_grace
                )
                self._gap = window.gap
                taken = rows[: window.take]
                records: list[tuple[int, TaskRecord]] = []
                states: list[tuple[int, ExpertStateRecord]] = []
                for fid, kind, data in taken:
                    if kind == TASK_RECORD and data is not None:
                        records.append((fid, data))
                    elif kind == EXPERT_STATE and data is not None:
                        states.append((fid, data))
                new_tasks, dupes = self._write_tasks(conn, records)
                new_states = self._write_states(conn, states)
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
        # Other types share the id sequence (needed to see holes) but not their bodies.
        wanted = type_coerce(
            case(
                (routing_feed.c.type.in_((TASK_RECORD, EXPERT_STATE)), routing_feed.c.data),
                else_=None,
            ),
            JSON,
        )
        query = (
            select(routing_feed.c.id, routing_feed.c.type, wanted)
            .where(routing_feed.c.id > cursor)
            .order_by(routing_feed.c.id)
            .limit(self.batch_size)
        )
        with self.source.connect() as src:
            rows = src.execute(query).all()
        return [(int(r[0]), str(r[1]), r[2]) for r in rows]

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

    def _write_tasks(
        self, conn: Connection, records: Sequence[tuple[int, TaskRecord]]
    ) -> tuple[int, int]:
        if not records:
            return 0, 0
        names = self._names or ConfigView()
        unique: dict[str, tuple[int, TaskRecord]] = {}
        for fid, rec in records:
            unique.setdefault(rec["task_id"], (fid, rec))
        existing = set(
            conn.execute(
                select(report_tasks.c.task_id).where(report_tasks.c.task_id.in_(list(unique)))
            ).scalars()
        )
        fresh = [(fid, rec) for tid, (fid, rec) in unique.items() if tid not in existing]
        dupes = len(records) - len(fresh)
        if dupes:
            log.info(
                "reporting skipped duplicate task records count=%d reason=already ingested", dupes
            )
        if not fresh:
            return 0, dupes
        task_rows, offer_rows, attempt_rows = [], [], []
        for fid, rec in fresh:
            version = int(rec.get("config_version") or 0)
            task_rows.append(
                {
                    "task_id": rec["task_id"],
                    "feed_id": fid,
                    "code": rec.get("code") or "",
                    "external_id": rec.get("external_id"),
                    "channel": rec.get("channel") or "voice",
                    "queue_id": rec["queue_id"],
                    "queue_name": names.name("queue", rec["queue_id"], version),
                    "queues": list(rec.get("queues") or [rec["queue_id"]]),
                    "status": rec["status"],
                    "call_disposition": int(rec["call_disposition"]),
                    "expert_id": rec.get("expert_id"),
                    "caller": rec.get("caller"),
                    "dialed_number": rec.get("dialed_number"),
                    "created_at": utc(rec["created_at"]),
                    "assigned_at": _opt_time(rec.get("assigned_at")),
                    "connected_at": _opt_time(rec.get("connected_at")),
                    "ended_at": utc(rec["ended_at"]),
                    "wait": float(rec.get("wait") or 0.0),
                    "ring_time": float(rec.get("ring_time") or 0.0),
                    "talk_time": float(rec.get("talk_time") or 0.0),
                    "work_time": float(rec.get("work_time") or 0.0),
                    "sl_threshold": names.service_level(rec["queue_id"], version),
                    "config_version": version,
                    "node": rec.get("node") or "",
                }
            )
            for offer in rec.get("offers") or []:
                offer_rows.append(
                    {
                        "offer_id": offer["offer_id"],
                        "task_id": rec["task_id"],
                        "expert_id": offer["expert_id"],
                        "queue_id": offer.get("queue_id") or rec["queue_id"],
                        "created_at": utc(offer["created_at"]),
                        "ended_at": _opt_time(offer.get("ended_at")),
                        "outcome": offer["outcome"],
                    }
                )
            for seq, attempt in enumerate(rec.get("attempts") or [], start=1):
                attempt_rows.append(
                    {
                        "task_id": rec["task_id"],
                        "seq": seq,
                        "expert_id": attempt["expert_id"],
                        "disposition": int(attempt["disposition"]),
                        "at": utc(attempt["at"]),
                    }
                )
        bulk_insert(conn, report_tasks, task_rows)
        bulk_insert(conn, report_offers, offer_rows)
        bulk_insert(conn, report_attempts, attempt_rows)
        parts = [p for _, rec in fresh for p in task_contribution(rec, names)]
        merge_queue_figures(conn, add_up(parts))
        return len(fresh), dupes

    # -- expert states ----------------------------------------------------------------------

    def _write_states(
        self, conn: Connection, states: Sequence[tuple[int, ExpertStateRecord]]
    ) -> int:
        if not states:
            return 0
        existing = set(
            conn.execute(
                select(report_expert_states.c.feed_id).where(
                    report_expert_states.c.feed_id.in_([fid for fid, _ in states])
                )
            ).scalars()
        )
        fresh = [(fid, s) for fid, s in states if fid not in existing]
        by_expert: dict[str, list[tuple[int, ExpertStateRecord]]] = {}
        for fid, s in fresh:
            by_expert.setdefault(s["expert_id"], []).append((fid, s))
        rows = []
        closes = []
        for expert_id, changes in by_expert.items():
            first_fid, first = changes[0]
            # The state that was open ends when the first new one starts.
            closes.append({"k_expert": expert_id, "k_before": first_fid, "k_at": utc(first["at"])})
            for i, (fid, s) in enumerate(changes):
                nxt = changes[i + 1][1]["at"] if i + 1 < len(changes) else None
                rows.append(
                    {
                        "feed_id": fid,
                        "expert_id": expert_id,
                        "state": s["state"],
                        "started_at": utc(s["at"]),
                        "ended_at": utc(nxt) if nxt else None,
                        "config_version": int(s.get("config_version") or 0),
                    }
                )
        if closes:
            st = report_expert_states
            conn.execute(
                update(st)
                .where(
                    and_(
                        st.c.expert_id == bindparam("k_expert"),
                        st.c.ended_at.is_(None),
                        st.c.feed_id < bindparam("k_before"),
                    )
                )
                .values(ended_at=bindparam("k_at")),
                closes,
            )
        bulk_insert(conn, report_expert_states, rows)
        return len(rows)


def _opt_time(value: str | None) -> datetime | None:
    return utc(value) if value else None


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
    """Add batch totals to report_queue_intervals (read, merge, write: one writer holds the
    feed cursor lock)."""
    if not totals:
        return
    q = report_queue_intervals
    starts = sorted({k[0] for k in totals})
    queues = sorted({k[1] for k in totals})
    current: dict[tuple[datetime, str], QueueFigures] = {}
    for r in conn.execute(
        select(q).where(and_(q.c.interval_start.in_(starts), q.c.queue_id.in_(queues)))
    ).mappings():
        fig = QueueFigures(r["queue_name"], **{c: r[c] for c in QueueFigures.COUNTS})
        current[(utc(r["interval_start"]), r["queue_id"])] = fig
    inserts, updates = [], []
    for key, delta in totals.items():
        if key in current:
            fig = current[key]
            fig.merge(delta)
            updates.append(
                {
                    "k_start": key[0],
                    "k_queue": key[1],
                    "queue_name": fig.queue_name,
                    **{c: getattr(fig, c) for c in QueueFigures.COUNTS},
                }
            )
        else:
            inserts.append(
                {
                    "interval_start": key[0],
                    "queue_id": key[1],
                    "queue_name": delta.queue_name,
                    **{c: getattr(delta, c) for c in QueueFigures.COUNTS},
                }
            )
    if inserts:
        conn.execute(insert(q), inserts)
    if updates:
        stmt = (
            update(q)
            .where(
                and_(
                    q.c.interval_start == bindparam("k_start"),
                    q.c.queue_id == bindparam("k_queue"),
                )
            )
            .values({c: bindparam(c) for c in ("queue_name", *QueueFigures.COUNTS)})
        )
        conn.execute(stmt, updates)


_SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"  # SQLAlchemy's storage format for DateTime on SQLite


def bulk_insert(conn: Connection, target: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert many rows through the driver's executemany with values converted once here.

    SQLAlchemy's per-row parameter processing was most of the ingestion time; the conversions
    are the same ones its types apply (UTC datetimes as SQLAlchemy's SQLite text format, JSON
    as text), so rows read back through SQLAlchemy are identical.
    """
    if not rows:
        return
    columns = list(rows[0])
    sqlite = conn.dialect.name == "sqlite"
    converters: list[Callable[[Any], Any] | None] = []
    for name in columns:
        kind = target.c[name].type
        if isinstance(kind, JSON):
            converters.append(_json_text)
        elif isinstance(kind, DateTime) and sqlite:
            converters.append(_sqlite_time)
        else:
            converters.append(None)
    if conn.dialect.name == "postgresql":
        _copy_rows(conn, target, columns, rows, converters)
        return
    marker = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    sql = (
        f"INSERT INTO {target.name} ({', '.join(columns)}) "
        f"VALUES ({', '.join(marker for _ in columns)})"
    )
    conn.exec_driver_sql(sql, _converted(columns, rows, converters))


def _copy_rows(
    conn: Connection,
    target: Table,
    columns: list[str],
    rows: Sequence[dict[str, Any]],
    converters: list[Callable[[Any], Any] | None],
) -> None:
    """PostgreSQL: COPY, in the connection's transaction (several times faster than
    executemany for a few thousand rows)."""
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        with cursor.copy(f"COPY {target.name} ({', '.join(columns)}) FROM STDIN") as copy:
            for values in _converted(columns, rows, converters):
                copy.write_row(values)
    finally:
        cursor.close()


def _converted(
    columns: list[str],
    rows: Sequence[dict[str, Any]],
    converters: list[Callable[[Any], Any] | None],
) -> list[tuple[Any, ...]]:
    """Rows as value tuples in column order, converting only the columns that need it."""
    pick = itemgetter(*columns)
    todo = [(i, f) for i, f in enumerate(converters) if f is not None]
    out: list[tuple[Any, ...]] = []
    for row in rows:
        picked = pick(row)
        values = list(picked) if len(columns) > 1 else [picked]
        for i, f in todo:
            v = values[i]
            if v is not None:
                values[i] = f(v)
        out.append(tuple(values))
    return out


def _json_text(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _sqlite_time(value: datetime) -> str:
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.isoformat(" ", "microseconds")[:26]  # == strftime(_SQLITE_TIME), faster


def feed_head(engine: Engine) -> int:
    """The highest feed id (0 when empty)."""
    with engine.connect() as conn:
        return int(conn.execute(select(func.max(routing_feed.c.id))).scalar() or 0)
