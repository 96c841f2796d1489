"""Durable storage of the runtime: one transaction per batch of core transitions.

The service prepares a ``Batch`` (plain rows) on the event loop and writes it in a worker
thread; everything in one batch commits together or not at all. The active node is the only
writer, so it assigns feed ids and recovery keys itself (``Sequences``) and they ascend in
commit order. Readers (HTTP feeds, reporting, recovery) use the functions at the bottom.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

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
from sqlalchemy.dialects import postgresql, sqlite

from expertline.db.engine import as_utc, json_text, sqlite_time
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

RECORD_TABLES: dict[str, Table] = {"rcd": rcd, "tcd": tcd}


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Sequences:
    """Next ids for the tables whose ids the runtime assigns."""

    feed: int = 0
    rcd: int = 0
    tcd: int = 0
    outbox: int = 0
    webhook: int = 0

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
        )


@dataclass
class Batch:
    """Rows of one transaction. Upserts are keyed by primary key; the last one of a key wins."""

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


def write_batch(engine: Engine, batch: Batch) -> None:
    """Write one batch in one transaction (called from a worker thread)."""
    if engine.dialect.name != "sqlite":
        with engine.begin() as conn:
            _write(conn, batch)
        return
    statements = _sqlite_statements(batch)  # before the transaction: it holds the write lock
    with engine.begin() as conn:
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            for sql, params in statements:
                cursor.execute(sql, params)
        finally:
            cursor.close()


# SQLite: the same rows through the driver directly. SQLAlchemy's per-value processing costs
# more than SQLite itself at thousands of rows per commit; values are converted here exactly
# as SQLAlchemy stores them (naive UTC datetime strings, JSON text, 0/1 booleans), so every
# reader (SQLAlchemy included) sees the same data. Each table gets one row-to-parameters
# function that converts only the columns needing it (JSON with orjson, datetimes once per
# distinct value).
#
# Rows go in multi-row ``INSERT ... VALUES (...), (...)`` statements of power-of-two sizes (a
# handful of distinct statements, all kept in the driver's statement cache). SQLite's own work
# then runs in a few long steps, during which the driver releases the GIL, so the event loop
# keeps routing while a commit runs. A per-row ``executemany`` gives up and re-takes the GIL
# at every row, and each re-take waits for a busy loop thread to let go (up to the
# interpreter's switch interval): a commit crawled whenever the loop was busy.
_RowFunction = Callable[[dict[str, Any], dict[Any, Any]], tuple[Any, ...]]
_SQLITE_SQL: dict[tuple[str, str, int], str] = {}
_SQLITE_ROWS: dict[str, _RowFunction] = {}
_SQLITE_MAX_PARAMS = 32766  # SQLITE_MAX_VARIABLE_NUMBER's default since SQLite 3.32


def _datetime_text(value: Any) -> Any:
    return sqlite_time(value) if isinstance(value, datetime) else value


def _flag(value: Any) -> Any:
    return int(value) if isinstance(value, bool) else value


def _row_function(table: Table) -> _RowFunction:
    """A function turning one row dict into the driver's parameters for ``table``."""
    cached = _SQLITE_ROWS.get(table.name)
    if cached is not None:
        return cached
    parts: list[str] = []
    for column in table.columns:
        get = f"row.get({column.name!r})"
        if isinstance(column.type, JSON):
            parts.append(f"json_text({get})")
        elif isinstance(column.type, DateTime):
            parts.append(f"(dt[v] if (v := {get}) in dt else dt.setdefault(v, dt_text(v)))")
        elif isinstance(column.type, Boolean):
            parts.append(f"flag({get})")
        else:
            parts.append(get)
    source = "def convert(row, dt):\n    return (" + ", ".join(parts) + ",)\n"
    scope: dict[str, Any] = {"json_text": json_text, "dt_text": _datetime_text, "flag": _flag}
    exec(source, scope)
    convert: _RowFunction = scope["convert"]
    _SQLITE_ROWS[table.name] = convert
    return convert


def _insert_sql(table: Table, key: str | None, rows: int) -> str:
    """``INSERT`` of ``rows`` rows into ``table`` (an upsert on ``key`` when given)."""
    cached = _SQLITE_SQL.get((table.name, key or "", rows))
    if cached is not None:
        return cached
    cols = [c.name for c in table.columns]
    one = "(" + ", ".join("?" * len(cols)) + ")"
    sql = f"INSERT INTO {table.name} ({', '.join(cols)}) VALUES " + ", ".join([one] * rows)
    if key is not None:
        sql += f" ON CONFLICT({key}) DO UPDATE SET " + ", ".join(
            f"{c} = excluded.{c}" for c in cols if c != key
        )
    _SQLITE_SQL[(table.name, key or "", rows)] = sql
    return sql


def _sqlite_inserts(
    out: list[tuple[str, list[Any]]],
    dt: dict[Any, str | None],
    table: Table,
    rows: list[dict[str, Any]],
    key: str | None = None,
) -> None:
    if not rows:
        return
    convert = _row_function(table)
    width = len(table.columns)
    params = [value for row in rows for value in convert(row, dt)]
    largest = 1 << ((_SQLITE_MAX_PARAMS // width).bit_length() - 1)  # rows per statement
    done, total = 0, len(rows)
    while done < total:
        n = min(largest, 1 << ((total - done).bit_length() - 1))
        out.append((_insert_sql(table, key, n), params[done * width : (done + n) * width]))
        done += n


def _sqlite_statements(batch: Batch) -> list[tuple[str, list[Any]]]:
    out: list[tuple[str, list[Any]]] = []
    dt: dict[Any, str | None] = {}  # a batch shares a handful of timestamps
    _sqlite_inserts(out, dt, routing_feed, batch.feed)
    _sqlite_inserts(out, dt, runtime_tasks, list(batch.tasks.values()), "task_id")
    _sqlite_inserts(out, dt, runtime_offers, list(batch.offers.values()), "offer_id")
    _sqlite_inserts(out, dt, runtime_experts, list(batch.experts.values()), "expert_id")
    meta = [{"key": k, "value": v} for k, v in batch.meta.items()]
    _sqlite_inserts(out, dt, runtime_meta, meta, "key")
    _sqlite_inserts(out, dt, rcd, batch.rcd)
    _sqlite_inserts(out, dt, tcd, batch.tcd)
    _sqlite_inserts(out, dt, runtime_outbox, batch.outbox)
    done = batch.outbox_done
    for start in range(0, len(done), 1000):
        chunk = done[start : start + 1000]
        marks = ", ".join("?" * len(chunk))
        out.append((f"DELETE FROM {runtime_outbox.name} WHERE id IN ({marks})", list(chunk)))
    _sqlite_inserts(out, dt, webhook_deliveries, batch.webhooks)
    return out


def _write(conn: Connection, batch: Batch) -> None:
    if batch.feed:
        conn.execute(insert(routing_feed), batch.feed)
    if batch.tasks:
        _upsert(conn, runtime_tasks, "task_id", list(batch.tasks.values()))
    if batch.offers:
        _upsert(conn, runtime_offers, "offer_id", list(batch.offers.values()))
    if batch.experts:
        _upsert(conn, runtime_experts, "expert_id", list(batch.experts.values()))
    if batch.meta:
        _upsert(conn, runtime_meta, "key", [{"key": k, "value": v} for k, v in batch.meta.items()])
    if batch.rcd:
        conn.execute(insert(rcd), batch.rcd)
    if batch.tcd:
        conn.execute(insert(tcd), batch.tcd)
    if batch.outbox:
        conn.execute(insert(runtime_outbox), batch.outbox)
    if batch.outbox_done:
        conn.execute(delete(runtime_outbox).where(runtime_outbox.c.id.in_(batch.outbox_done)))
    if batch.webhooks:
        conn.execute(insert(webhook_deliveries), batch.webhooks)


def _upsert(conn: Connection, table: Table, key: str, rows: list[dict[str, Any]]) -> None:
    dialect = conn.dialect.name
    stmt: Any
    if dialect == "postgresql":
        stmt = postgresql.insert(table)
    elif dialect == "sqlite":
        stmt = sqlite.insert(table)
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported
        raise RuntimeError(f"unsupported database {dialect}")
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
