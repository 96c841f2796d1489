"""The ``expertline`` command line. Errors are one clear line on stderr and a non-zero exit."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine

from expertline.db.engine import DatabaseError, make_engine
from expertline.errors import ExpertlineError
from expertline.settings import Settings, load_settings

app = typer.Typer(
    name="expertline",
    help="Route contact-center calls and chats to enterprise experts by IM presence.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
tokens_app = typer.Typer(help="API bearer tokens.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(tokens_app, name="tokens")

out = Console()
err = Console(stderr=True)


@dataclass
class Globals:
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


def fail(message: str, code: int = 2) -> NoReturn:
    err.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def migrated_engine(settings: Settings | None = None) -> Engine:
    """An engine whose schema is current, or a clear failure."""
    from expertline.db import migrate

    engine = GLOBALS.engine(settings)
    try:
        migrate.require_current(engine)
    except DatabaseError as exc:
        fail(str(exc))
    return engine


@app.callback()
def _globals(
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            help="Database URL (default: SQLite in the data directory).",
            envvar="EXPERTLINE_DB",
        ),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="Data directory.", envvar="EXPERTLINE_DATA_DIR"),
    ] = None,
) -> None:
    GLOBALS.db = db
    GLOBALS.data_dir = data_dir


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the schema to this version."""
    from expertline.db import migrate

    settings = GLOBALS.settings()
    engine = GLOBALS.engine(settings)
    try:
        before, after = migrate.upgrade(engine)
    except DatabaseError as exc:
        fail(str(exc))
    if before == after:
        out.print(f"database already at revision {after}")
    else:
        out.print(f"database upgraded from {before or 'empty'} to {after}")
    from expertline.reporting.migrate import upgrade_url

    try:
        before, after = upgrade_url(settings.reporting_db_url)
    except DatabaseError as exc:
        fail(str(exc))
    where = "" if settings.reporting_db_url == settings.db_url else " (reporting database)"
    if before == after:
        out.print(f"reporting schema already at revision {after}{where}")
    else:
        out.print(f"reporting schema upgraded from {before or 'empty'} to {after}{where}")


@tokens_app.command("create")
def tokens_create(
    name: str,
    role: Annotated[
        str,
        typer.Option("--role", help="admin | supervisor | routing-client | reporting | expert"),
    ],
    expert: Annotated[
        str | None,
        typer.Option(
            "--expert",
            metavar="EXPERT_ID",
            help="For --role expert: the one expert this token acts for (required).",
        ),
    ] = None,
) -> None:
    """Create a token; the token alone is printed on the last line."""
    from expertline.security.tokens import create_token

    token = create_token(migrated_engine(), name, role, expert)
    bound = f" for expert {expert!r}" if expert is not None else ""
    out.print(f"created token {name!r} with role {role}{bound}; it is shown once:", highlight=False)
    print(token)


@tokens_app.command("list")
def tokens_list() -> None:
    """List tokens (never their values)."""
    from expertline.security.tokens import list_tokens

    table = Table("id", "name", "role", "expert", "created", "revoked")
    for t in list_tokens(migrated_engine()):
        table.add_row(
            str(t.id),
            t.name,
            t.role,
            t.expert_id or ("(none: replace it)" if t.role == "expert" else ""),
            t.created_at.isoformat(timespec="seconds"),
            t.revoked_at.isoformat(timespec="seconds") if t.revoked_at else "",
        )
    out.print(table)


@tokens_app.command("revoke")
def tokens_revoke(name: str) -> None:
    """Revoke every live token with this name."""
    from expertline.security.tokens import revoke_token

    count = revoke_token(migrated_engine(), name)
    out.print(f"revoked {count} token(s) named {name!r}")


def _register_parts() -> None:
    """Each part of the product adds its commands here."""
    import importlib

    for module in (
        "expertline.node_cli",
        "expertline.config.cli",
        "expertline.runtime.cli",
        "expertline.reporting.cli",
        "expertline.bench.cli",
        "expertline.backup.cli",
        "expertline.web.users_cli",
    ):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        mod.register(app)


_register_parts()


def main() -> None:
    try:
        app()
    except ExpertlineError as exc:
        err.print(f"error: {exc.message}", markup=False, highlight=False, soft_wrap=True)
        for problem in exc.details:
            err.print(f"  {problem}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except DatabaseError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
