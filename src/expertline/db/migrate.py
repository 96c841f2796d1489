"""Schema migrations (Alembic), driven from code so the CLI, services and tests share one path.

Each part that owns tables has its own chain (script directory + version table), so their
migrations never collide: the runtime's chain here, the reporting chain in
``expertline.reporting.migrate`` (which may live in another database).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import OperationalError

from expertline.db.engine import DatabaseError


@dataclass(frozen=True)
class MigrationChain:
    """One Alembic chain: where its scripts are, which table records its revision."""

    label: str  # "database schema", "reporting schema": used in operator messages
    scripts: Path
    version_table: str = "alembic_version"
    pg_lock_key: int = 0x6578_6C6E  # serializes nodes upgrading one PostgreSQL database at once

    def _config(self) -> Config:
        cfg = Config()
        cfg.set_main_option("script_location", str(self.scripts))
        return cfg

    def head_revision(self) -> str:
        head = ScriptDirectory.from_config(self._config()).get_current_head()
        assert head is not None
        return head

    def current_revision(self, engine: Engine) -> str | None:
        try:
            with engine.connect() as conn:
                return self.revision(conn)
        except OperationalError as exc:
            raise DatabaseError(f"cannot reach the database: {first_line(exc)}") from exc

    def revision(self, conn: Connection) -> str | None:
        """This chain's revision as ``conn`` sees it (None: its schema is not there)."""
        ctx = MigrationContext.configure(conn, opts={"version_table": self.version_table})
        return ctx.get_current_revision()

    def upgrade(self, engine: Engine, revision: str = "head") -> tuple[str | None, str]:
        """Bring the schema to ``revision``; returns (before, after)."""
        cfg = self._config()
        try:
            with engine.connect() as conn, conn.execution_options(sqlite_begin="IMMEDIATE").begin():
                if conn.dialect.name == "postgresql":
                    # Two nodes starting at once: the second waits, then finds nothing to do.
                    conn.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"), {"key": self.pg_lock_key}
                    )
                before = self.revision(conn)
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
        except OperationalError as exc:
            raise DatabaseError(f"cannot reach the database: {first_line(exc)}") from exc
        return before, self.head_revision() if revision == "head" else revision

    def require_current(self, engine: Engine) -> None:
        """Raise DatabaseError unless the schema is at the latest revision."""
        current = self.current_revision(engine)
        head = self.head_revision()
        if current != head:
            state = "empty (never migrated)" if current is None else f"at revision {current}"
            raise DatabaseError(
                f"{self.label} is {state}, this version needs {head}: run `expertline db upgrade`"
            )


RUNTIME = MigrationChain("database schema", Path(__file__).parent / "migrations")
MIGRATIONS = RUNTIME.scripts


def head_revision() -> str:
    return RUNTIME.head_revision()


def current_revision(engine: Engine) -> str | None:
    return RUNTIME.current_revision(engine)


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str]:
    return RUNTIME.upgrade(engine, revision)


def require_current(engine: Engine) -> None:
    RUNTIME.require_current(engine)


def first_line(exc: BaseException) -> str:
    """The first line of a database error's message, for an operator-facing one-liner."""
    text_ = str(getattr(exc, "orig", exc)) or exc.__class__.__name__
    return text_.strip().splitlines()[0]
