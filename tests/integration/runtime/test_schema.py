"""The runtime migration creates exactly the tables the code describes, on both backends."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect

from expertline.db import migrate, tables
from expertline.db.engine import make_engine

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


ROWID_KEYS = {
    "routing_feed": "id",
    "rcd": "recovery_key",
    "tcd": "recovery_key",
    "runtime_outbox": "id",
    "webhook_deliveries": "id",
}


def test_runtime_assigned_keys_are_sqlite_rowids(tmp_path: Path) -> None:
    """On SQLite the feed's, records' and outbox's keys are the rowid (no separate index)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'rowid.db'}")
    try:
        migrate.upgrade(engine)
        with engine.connect() as conn:
            for table, key in ROWID_KEYS.items():
                covered = [
                    [c[2] for c in conn.exec_driver_sql(f"PRAGMA index_info('{index[1]}')")]
                    for index in conn.exec_driver_sql(f"PRAGMA index_list('{table}')")
                ]
                assert [key] not in covered, f"{table}.{key} has its own index"
                # a rowid alias reads back as the rowid
                columns = {c[1]: c for c in conn.exec_driver_sql(f"PRAGMA table_info('{table}')")}
                assert columns[key][2] == "INTEGER" and columns[key][5] == 1
    finally:
        engine.dispose()


def test_upgrade_to_rowid_keys_keeps_rows(tmp_path: Path) -> None:
    """A database at the previous revision keeps every feed row and record through 0003."""
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        migrate.upgrade(engine, "0002")
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO routing_feed (id, type, task_id, expert_id, data, created_at) "
                "VALUES (7, 'task.created', 't1', NULL, '{\"task_id\": \"t1\"}', "
                "'2026-11-25 10:00:00.000000')"
            )
            conn.exec_driver_sql(
                "INSERT INTO tcd (recovery_key, datetime, task_id, call_disposition, duration, "
                "delay_time, ring_time, talk_time, work_time, node, data) VALUES (3, "
                "'2026-11-25 10:00:01.000000', 't1', 13, 1, 0, 0, 1, 0, 'n', '{}')"
            )
        migrate.upgrade(engine)
        with engine.connect() as conn:
            feed = conn.exec_driver_sql("SELECT id, rowid, type, data FROM routing_feed").all()
            tcd = conn.exec_driver_sql("SELECT recovery_key, task_id FROM tcd").all()
        assert feed == [(7, 7, "task.created", '{"task_id": "t1"}')]
        assert tcd == [(3, "t1")]
    finally:
        engine.dispose()
