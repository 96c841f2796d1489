"""Durable storage of the runtime: one transaction per batch of core transitions.

The service prepares a ``Batch`` (plain rows, times as POSIX seconds) on the event loop and
a writer (``runtime/writer.py``: a process for SQLite, a worker thread for PostgreSQL) writes
it; everything in one batch commits together or not at all. The active node is the only
writer, so it assigns feed ids, recovery keys and batch numbers itself (``Sequences``) and
they ascend in commit order. Each transaction also records its batch number, which makes a
retried commit harmless. Readers (HTTP feeds, reporting, recovery) use the functions at the
bottom.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    Boolean,
    Connection,
    DateTime,
    Engine,
    Table,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import SQLAlchemyError

from expertline.db.engine import as_utc
from expertline.db.tables import (
    rcd,
    routing_feed,
    runtime_experts,
    runtime_meta,
    runtime_offers,
    runtime_outbox,
    runtime_tasks,
    tcd,
    webhook_deliveries,
)
from expertline.errors import Unavailable
from expertline.ha.lease import check_fence
from expertline.instants import instants_as_text
from expertline.instants import iso as iso  # the runtime's modules write instants with it
from expertline.runtime import sqlwrite

RECORD_TABLES: dict[str, Table] = {"rcd": rcd, "tcd": tcd}


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


@dataclass
class Sequences:
    """Next ids for the tables whose ids the runtime assigns."""

    feed: int = 0
    rcd: int = 0
    tcd: int = 0
    outbox: int = 0
    webhook: int = 0
    batch: int = 0

    def take(self, name: str) -> int:
        value = getattr(self, name) + 1
        setattr(self, name, value)
        return value


def load_sequences(engine: Engine) -> Sequences:
    with engine.connect() as conn:

        def top(column: Any) -> int:
            return int(conn.execute(select(func.max(column))).scalar() or 0)

        return Sequences(
            feed=top(routing_feed.c.id),
            rcd=top(rcd.c.recovery_key),
            tcd=top(tcd.c.recovery_key),
            outbox=top(runtime_outbox.c.id),
            webhook=top(webhook_deliveries.c.id),
            batch=_committed_seq(conn),
        )


@dataclass
class Batch:
    """Rows of one transaction. Upserts are keyed by primary key; the last one of a key wins.
    ``seq`` numbers the batch (``Sequences.batch``); None leaves it unnumbered."""

    seq: int | None = None
    fence: int | None = None  # the HA lease token the commit must still hold (PostgreSQL)
    feed: list[dict[str, Any]] = field(default_factory=list)
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    offers: dict[str, dict[str, Any]] = field(default_factory=dict)
    experts: dict[str, dict[str, Any]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    rcd: list[dict[str, Any]] = field(default_factory=list)
    tcd: list[dict[str, Any]] = field(default_factory=list)
    outbox: list[dict[str, Any]] = field(default_factory=list)
    outbox_done: list[int] = field(default_factory=list)
    webhooks: list[dict[str, Any]] = field(default_factory=list)

    def empty(self) -> bool:
        return not (
            self.feed
            or self.tasks
            or self.offers
            or self.experts
            or self.meta
            or self.rcd
            or self.tcd
            or self.outbox
            or self.outbox_done
            or self.webhooks
        )

    def rows(self) -> int:
        return (
            len(self.feed)
            + len(self.tasks)
            + len(self.offers)
            + len(self.experts)
            + len(self.rcd)
            + len(self.tcd)
            + len(self.outbox)
            + len(self.webhooks)
        )


def writes(batch: Batch) -> sqlwrite.Writes:
    """The batch as plain data, in statement order (what a writer process is sent)."""
    return sqlwrite.Writes(
        seq=batch.seq,
        rows=[
            (routing_feed.name, None, batch.feed),
            (runtime_tasks.name, "task_id", list(batch.tasks.values())),
            (runtime_offers.name, "offer_id", list(batch.offers.values())),
            (runtime_experts.name, "expert_id", list(batch.experts.values())),
            (runtime_meta.name, "key", [{"key": k, "value": v} for k, v in batch.meta.items()]),
            (rcd.name, None, batch.rcd),
            (tcd.name, None, batch.tcd),
            (runtime_outbox.name, None, batch.outbox),
            (webhook_deliveries.name, None, batch.webhooks),
        ],
        deletes=[(runtime_outbox.name, "id", batch.outbox_done)] if batch.outbox_done else [],
    )


_WRITTEN_TABLES = (
    routing_feed,
    runtime_tasks,
    runtime_offers,
    runtime_experts,
    runtime_meta,
    rcd,
    tcd,
    runtime_outbox,
    webhook_deliveries,
)


def _kind(column: Any) -> str:
    if isinstance(column.type, JSON):
        return sqlwrite.JSON
    if isinstance(column.type, DateTime):
        return sqlwrite.TIME
    if isinstance(column.type, Boolean):
        return sqlwrite.FLAG
    return sqlwrite.PLAIN


def table_plans() -> list[sqlwrite.TablePlan]:
    """The tables a batch writes, as the SQLite writer (thread or process) needs them."""
    return [
        sqlwrite.TablePlan(t.name, tuple(c.name for c in t.columns), tuple(map(_kind, t.columns)))
        for t in _WRITTEN_TABLES
    ]


_SQLITE_WRITER = sqlwrite.SqliteBatchWriter(table_plans())


def write_batch(engine: Engine, batch: Batch) -> bool:
    """Write one batch in one transaction (called from a worker thread). Returns False when
    the batch's sequence number shows it was already written (a retried commit)."""
    if engine.dialect.name != "sqlite":
        with engine.begin() as conn:
            # The fence first: after a takeover, batch numbers continue on the other node, so
            # a stale node's next number may already be taken by a different batch.
            if batch.fence is not None:
                check_fence(conn, batch.fence)  # raises Fenced: another node took over
            if not sqlwrite.due(batch.seq, _committed_seq(conn)):
                return False
            _write(conn, batch)
        return True
    plain = writes(batch)
    statements = _SQLITE_WRITER.statements(plain)  # before the transaction: it holds the lock
    with engine.begin() as conn:
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            last = sqlwrite.committed_seq(cursor)
            return _SQLITE_WRITER.write(cursor, plain, statements, last)
        finally:
            cursor.close()


def _committed_seq(conn: Connection) -> int:
    value = conn.execute(
        select(runtime_meta.c.value).where(runtime_meta.c.key == sqlwrite.BATCH_KEY)
    ).scalar()
    return int(value) if value is not None else 0


_TABLES = {t.name: t for t in _WRITTEN_TABLES}


def _write(conn: Connection, batch: Batch) -> None:
    """The batch through SQLAlchemy (PostgreSQL), in the same statement order as SQLite."""
    plain = writes(batch)
    for name, key, rows in plain.rows:
        if not rows:
            continue
        table = _TABLES[name]
        rows = _with_datetimes(table, rows)
        if key is None:
            conn.execute(insert(table), rows)
        else:
            _upsert(conn, table, key, rows)
    for name, column, values in plain.deletes:
        table = _TABLES[name]
        conn.execute(delete(table).where(table.c[column].in_(values)))
    if plain.seq is not None:
        _upsert(conn, runtime_meta, "key", [{"key": sqlwrite.BATCH_KEY, "value": plain.seq}])


def _with_datetimes(table: Table, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows carry times as POSIX seconds; SQLAlchemy's DateTime wants datetimes."""
    names = [c.name for c in table.columns if isinstance(c.type, DateTime)]
    out = []
    for row in rows:
        times = {n: utc(v) for n in names if isinstance(v := row.get(n), int | float)}
        out.append({**row, **times} if times else row)
    return out


def _upsert(conn: Connection, table: Table, key: str, rows: list[dict[str, Any]]) -> None:
    stmt = postgresql.insert(table)  # SQLite batches go through ``sqlwrite``
    columns = [c for c in rows[0] if c != key]
    stmt = stmt.on_conflict_do_update(
        index_elements=[key], set_={c: stmt.excluded[c] for c in columns}
    )
    conn.execute(stmt, rows)


# --- recovery ------------------------------------------------------------------------------


@dataclass
class StoredState:
    """What a starting runtime reads back: every task in flight, their offers, all experts."""

    tasks: list[dict[str, Any]]
    offers: list[dict[str, Any]]
    experts: list[dict[str, Any]]
    meta: dict[str, Any]
    outbox: list[dict[str, Any]]


def load_state(engine: Engine) -> StoredState:
    with engine.connect() as conn:
        tasks = [
            dict(r._mapping)
            for r in conn.execute(select(runtime_tasks).where(runtime_tasks.c.active.is_(True)))
        ]
        ids = [t["task_id"] for t in tasks]
        offers: list[dict[str, Any]] = []
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            offers.extend(
                dict(r._mapping)
                for r in conn.execute(
                    select(runtime_offers).where(runtime_offers.c.task_id.in_(chunk))
                )
            )
        experts = [dict(r._mapping) for r in conn.execute(select(runtime_experts))]
        meta = {r.key: r.value for r in conn.execute(select(runtime_meta))}
        outbox = [
            dict(r._mapping)
            for r in conn.execute(select(runtime_outbox).order_by(runtime_outbox.c.id))
        ]
    return StoredState(tasks, offers, experts, meta, outbox)


# --- readers -------------------------------------------------------------------------------


def task_row(engine: Engine, task_id: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(select(runtime_tasks).where(runtime_tasks.c.task_id == task_id)).first()
    return dict(row._mapping) if row else None


def task_by_external_id(engine: Engine, external_id: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(
            select(runtime_tasks).where(runtime_tasks.c.external_id == external_id)
        ).first()
    return dict(row._mapping) if row else None


def offers_of_expert(
    engine: Engine, expert_id: str, status: str | None, limit: int
) -> list[dict[str, Any]]:
    query = select(runtime_offers).where(runtime_offers.c.expert_id == expert_id)
    if status is not None:
        query = query.where(runtime_offers.c.status == status)
    query = query.order_by(runtime_offers.c.updated_at.desc()).limit(limit)
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def record_json(row: dict[str, Any]) -> dict[str, Any]:
    """An RCD or TCD row as the feed shows it (``GET /api/v1/records/...``, feed webhooks):
    the record's data with the row's columns over it, times in the API's form."""
    # The stored record keeps its instants (``at``, ``started_at``...) as POSIX seconds.
    data = instants_as_text(row.get("data") or {})
    body = {k: v for k, v in data.items() if k not in row}
    body.update(
        {k: iso(v) if isinstance(v, datetime) else v for k, v in row.items() if k != "data"}
    )
    return body


def count_records(engine: Engine, kind: str, after: int) -> int:
    """How many RCD or TCD rows follow a recovery key (a feed's backlog)."""
    table = RECORD_TABLES[kind]
    query = select(func.count()).select_from(table).where(table.c.recovery_key > after)
    with engine.connect() as conn:
        return int(conn.execute(query).scalar() or 0)


def read_records(engine: Engine, kind: str, after: int, limit: int) -> list[dict[str, Any]]:
    """RCD or TCD rows after a recovery key, in recovery-key (= commit) order."""
    table = RECORD_TABLES[kind]
    query = (
        select(table)
        .where(table.c.recovery_key > after)
        .order_by(table.c.recovery_key)
        .limit(limit)
    )
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def read_feed(
    engine: Engine,
    after: int,
    limit: int,
    types: list[str] | None = None,
    task_id: str | None = None,
) -> list[dict[str, Any]]:
    query = select(routing_feed).where(routing_feed.c.id > after)
    if types:
        query = query.where(routing_feed.c.type.in_(types))
    if task_id:
        query = query.where(routing_feed.c.task_id == task_id)
    query = query.order_by(routing_feed.c.id).limit(limit)
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def due_webhooks(engine: Engine, now: datetime, limit: int) -> list[dict[str, Any]]:
    """Deliveries due now whose task has no earlier delivery still pending (order per task)."""
    earlier = webhook_deliveries.alias("earlier")
    blocked = (
        select(earlier.c.id)
        .where(
            earlier.c.task_id == webhook_deliveries.c.task_id,
            earlier.c.id < webhook_deliveries.c.id,
            earlier.c.delivered_at.is_(None),
            earlier.c.failed_at.is_(None),
        )
        .exists()
    )
    query = (
        select(webhook_deliveries)
        .where(
            webhook_deliveries.c.delivered_at.is_(None),
            webhook_deliveries.c.failed_at.is_(None),
            webhook_deliveries.c.next_attempt_at <= now,
            ~blocked,
        )
        .order_by(webhook_deliveries.c.id)
        .limit(limit)
    )
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def next_webhook_due(engine: Engine) -> datetime | None:
    query = select(func.min(webhook_deliveries.c.next_attempt_at)).where(
        webhook_deliveries.c.delivered_at.is_(None), webhook_deliveries.c.failed_at.is_(None)
    )
    with engine.connect() as conn:
        value = conn.execute(query).scalar()
    return as_utc(value) if value is not None else None


def record_webhook_attempt(
    engine: Engine,
    delivery_id: int,
    attempts: int,
    *,
    delivered_at: datetime | None = None,
    next_attempt_at: datetime | None = None,
    failed_at: datetime | None = None,
    error: str | None = None,
) -> None:
    values: dict[str, Any] = {
        "attempts": attempts,
        "delivered_at": delivered_at,
        "next_attempt_at": next_attempt_at,
        "failed_at": failed_at,
    }
    if error is not None:  # a success keeps the last error seen, for the operator
        values["last_error"] = error
    with engine.begin() as conn:
        conn.execute(
            update(webhook_deliveries)
            .where(webhook_deliveries.c.id == delivery_id)
            .values(**values)
        )


READ_WITHIN = 3.0  # seconds a read on the request path may take before the caller hears 503
R = TypeVar("R")


async def async_read(read: Callable[..., R], *args: Any, within: float = READ_WITHIN) -> R:
    """``read(*args)`` in a worker thread, for a caller waiting on it: a database that cannot
    answer (unreachable, a primary being replaced) is ``Unavailable`` (503) at once, and one
    that does not answer within ``within`` seconds too; never a 500, never a hang."""
    try:
        return await asyncio.wait_for(asyncio.to_thread(read, *args), within)
    except (SQLAlchemyError, TimeoutError) as exc:
        raise Unavailable(
            f"the database cannot be read now ({type(exc).__name__}); retry", retry_after=2
        ) from exc
