"""The reporting schema has its own Alembic chain beside the runtime's."""

from __future__ import annotations

import subprocess
import sys

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect

from expertline.db import migrate
from expertline.db.engine import make_engine
from expertline.reporting import migrate as reporting_migrate
from expertline.reporting.tables import metadata
from support.databases import postgres_database

UPGRADE = "import sys; from expertline.reporting.migrate import upgrade_url; print(upgrade_url(sys.argv[1]))"


@pytest.mark.postgres
def test_two_chains_in_one_database_and_concurrent_upgrades() -> None:
    """HA nodes share PostgreSQL; SQLite is single-node, so only PostgreSQL sees this."""
    with postgres_database() as db_url:
        _check(db_url)


def _check(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        migrate.upgrade(engine)
        # Two nodes starting at once, each upgrading the reporting schema.
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", UPGRADE, db_url],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        outputs = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outputs
        reporting_migrate.require_current(engine)
        migrate.require_current(engine)  # the runtime's chain is untouched
        tables = set(inspect(engine).get_table_names())
        assert set(metadata.tables) <= tables
        assert {"alembic_version", "reporting_alembic_version"} <= tables
    finally:
        engine.dispose()


def test_migrations_build_the_tables_the_code_describes(engine: Engine) -> None:
    reporting_migrate.upgrade(engine)
    with engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn, opts={"compare_type": True, "include_name": _reporting_only}
        )
        assert compare_metadata(ctx, metadata) == []
    open_states = [
        ix
        for ix in inspect(engine).get_indexes("report_expert_states")
        if ix["name"] == "ix_report_expert_states_open"
    ]
    assert [ix["column_names"] for ix in open_states] == [["expert_id"]]


def _reporting_only(name: str | None, kind: str, parents: dict[str, str | None]) -> bool:
    """The runtime's tables share the database; compare only reporting's."""
    table = name if kind == "table" else parents.get("table_name")
    return kind == "schema" or table in metadata.tables
