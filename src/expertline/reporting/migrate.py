"""Reporting schema migrations: a chain of their own, so the runtime's and ours never collide.

The reporting service upgrades its schema when it starts (reporting owns it; on PostgreSQL an
advisory lock serializes nodes starting together), and ``expertline db upgrade`` calls
:func:`upgrade_url` on ``settings.reporting_db_url``, which may be the runtime's database or
another one.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine

from expertline.db.migrate import MigrationChain
from expertline.reporting.tables import VERSION_TABLE

CHAIN = MigrationChain(
    "reporting schema",
    Path(__file__).parent / "migrations",
    version_table=VERSION_TABLE,
    pg_lock_key=0x6578_6C72,  # "exlr"
)
MIGRATIONS = CHAIN.scripts


def head_revision() -> str:
    return CHAIN.head_revision()


def current_revision(engine: Engine) -> str | None:
    return CHAIN.current_revision(engine)


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str]:
    """Bring the reporting schema to ``revision``; returns (before, after)."""
    return CHAIN.upgrade(engine, revision)


def require_current(engine: Engine) -> None:
    """Raise DatabaseError unless the reporting schema is at the latest revision."""
    CHAIN.require_current(engine)


def upgrade_url(url: str) -> tuple[str | None, str]:
    """Upgrade the reporting schema of the database at ``url`` (``expertline db upgrade``)."""
    from expertline.db.engine import make_engine

    engine = make_engine(url)
    try:
        return upgrade(engine)
    finally:
        engine.dispose()
