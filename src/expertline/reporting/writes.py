"""Writing rows: configuration history, queue figures and bulk inserts on the reporting database.

Each function takes the open connection of the batch's transaction and writes through it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, and_, case, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from expertline.db.engine import json_text
from expertline.reporting.core import ConfigView, QueueFigures, Version, normalize_kind
from expertline.reporting.tables import report_config_history, report_queue_intervals


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


def existing_keys(
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
