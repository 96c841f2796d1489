"""What every ``expertline`` command shares: the output consoles, the global options, one-line
failures and the engine on a current schema. The command modules import it; it imports none of
them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from sqlalchemy import Engine

from expertline.db.engine import DatabaseError, make_engine
from expertline.settings import Settings, load_settings

out = Console()
err = Console(stderr=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """Say what is wrong in one line on stderr and exit with ``code``."""
    err.print(f"error: {one_line(message)}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def one_line(message: str) -> str:
    """A message as one line: its lines joined, surrounding space dropped."""
    return "; ".join(part.strip() for part in message.splitlines() if part.strip())


@dataclass
class Globals:
    """The options given before (or after) the command: ``--db`` and ``--data-dir``."""

    db: str | None = None
    data_dir: Path | None = None

    def settings(self, **flags: object) -> Settings:
        try:
            return load_settings(db=self.db, data_dir=self.data_dir, **flags)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            fail(f"bad setting {where}: {first['msg']}")

    def engine(self, settings: Settings | None = None) -> Engine:
        settings = settings or self.settings()
        try:
            return make_engine(settings.db_url)
        except DatabaseError as exc:
            fail(str(exc))


GLOBALS = Globals()


def migrated_engine(settings: Settings | None = None) -> Engine:
    """An engine whose schema is current, or a clear failure."""
    from expertline.db import migrate  # alembic: loaded by the commands that use the database

    engine = GLOBALS.engine(settings)
    try:
        migrate.require_current(engine)
    except DatabaseError as exc:
        fail(str(exc))
    return engine
