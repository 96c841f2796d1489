"""Reporting schema migrations: a chain of their own, so the runtime's and ours never collide.

The reporting service upgrades its schema when it starts (reporting owns it; on PostgreSQL an
advisory lock serializes nodes starting together), and ``expertline db upgrade`` calls
:func:`upgrade_url` on ``settings.reporting_db_url``, which may be the runtime's database or
another one.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from expertline.db.engine import DatabaseError
from expertline.reporting.tables import VERSION_TABLE

MIGRATIONS = Path(__file__).parent / "migrations"
_PG_LOCK_KEY = 0x6578_6C72  # "exlr": reporting schema migrations


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
            return ctx.get_current_revision()
    except OperationalError as exc:
        text = str(getattr(exc, "orig", exc)).strip().splitlines()
        raise DatabaseError(
            f"cannot reach the reporting database: {text[0] if text else exc}"
        ) from exc


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str]:
    """Bring the reporting schema to ``revision``; returns (before, after)."""
    cfg = _config()
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Two nodes starting at once: the second waits, then finds nothing to do.
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        before = MigrationContext.configure(
            conn, opts={"version_table": VERSION_TABLE}
        ).get_current_revision()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    return before, head_revision() if revision == "head" else revision


def require_current(engine: Engine) -> None:
    """Raise DatabaseError unless the reporting schema is at the latest revision."""
    current = current_revision(engine)
    head = head_revision()
    if current != head:
        state = "empty (never migrated)" if current is None else f"at revision {current}"
        raise DatabaseError(
            f"reporting schema is {state}, this version needs {head}: run `expertline db upgrade`"
        )


def upgrade_url(url: str) -> tuple[str | None, str]:
    """Upgrade the reporting schema of the database at ``url`` (for ``expertline db upgrade``:
    ``upgrade_url(settings.reporting_db_url)``)."""
    from expertline.db.engine import make_engine

    engine = make_engine(url)
    try:
        return upgrade(engine)
    finally:
        engine.dispose()
