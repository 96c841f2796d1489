"""The runtime migration creates exactly the tables the code describes, on both backends."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect

from expertline.db import tables

RUNTIME_TABLES = {
    "routing_feed",
    "runtime_tasks",
    "runtime_offers",
    "runtime_experts",
    "runtime_meta",
    "rcd",
    "tcd",
    "runtime_outbox",
    "webhook_deliveries",
}


def test_migration_matches_table_definitions(engine: Engine) -> None:
    assert set(inspect(engine).get_table_names()) >= RUNTIME_TABLES
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, tables.metadata)
    ours = [d for d in diff if _table_of(d) in RUNTIME_TABLES]
    assert ours == []


def test_tcd_allows_one_record_per_task(engine: Engine) -> None:
    uniques = inspect(engine).get_unique_constraints("tcd")
    assert any(u["column_names"] == ["task_id"] for u in uniques)


def _table_of(diff: object) -> str | None:
    item = diff[0] if isinstance(diff, list) else diff
    for part in item[1:] if isinstance(item, tuple) else ():
        name = getattr(part, "name", None)
        table = getattr(part, "table", None)
        if table is not None and getattr(table, "name", None):
            return str(table.name)
        if isinstance(part, str) and part in RUNTIME_TABLES:
            return part
        if name in RUNTIME_TABLES:
            return str(name)
    return None
