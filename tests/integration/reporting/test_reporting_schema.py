"""The reporting schema has its own Alembic chain beside the runtime's."""

from __future__ import annotations

import subprocess
import sys

import pytest
from sqlalchemy import inspect

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
