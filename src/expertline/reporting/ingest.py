"""Ingestion: the runtime's feed and configuration history into the reporting tables.

Each batch is one transaction on the reporting database that (1) locks and reads the feed
cursor, (2) copies new configuration versions, (3) writes the task records and expert state
changes that follow the cursor, and (4) moves the cursor. A crash anywhere before the commit
leaves nothing behind, and the rows are read again. The writes are idempotent too (tasks by
``task_id``, states by feed id), so a cursor moved back never duplicates anything.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Connection,
    DateTime,
    Engine,
    Integer,
    String,
    column,
    func,
    insert,
    select,
    table,
    update,
)

from expertline.records.feed import EXPERT_STATE, TASK_RECORD, ExpertStateRecord
from expertline.reporting.batch import (
    ATTEMPT_COLUMNS,
    OFFER_COLUMNS,
    STATE_COLUMNS,
    TASK_COLUMNS,
    Batch,
    json_value,
)
from expertline.reporting.core import ConfigView, GapWatch, QueueTotals, plan_window, utc
from expertline.reporting.tables import (
    report_attempts,
    report_cursors,
    report_expert_states,
    report_offers,
    report_tasks,
)
from expertline.reporting.writes import (
    apply_change,
    existing_keys,
    insert_rows,
    load_names,
    merge_queue_figures,
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
            existing_keys(conn, report_tasks.name, "task_id", list(batch.tasks), "text")
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
            existing_keys(
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


def feed_head(engine: Engine) -> int:
    """The highest feed id (0 when empty)."""
    with engine.connect() as conn:
        return int(conn.execute(select(func.max(routing_feed.c.id))).scalar() or 0)
