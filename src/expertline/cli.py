"""The ``expertline`` command line. Errors are one clear line on stderr and a non-zero exit."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from expertline import node_cli
from expertline.backup import cli as backup_cli
from expertline.bench import cli as bench_cli
from expertline.cli_support import GLOBALS, err, fail, migrated_engine, one_line, out
from expertline.config import cli as config_cli
from expertline.db.engine import DatabaseError
from expertline.errors import ExpertlineError
from expertline.reporting import cli as reporting_cli
from expertline.web import users_cli

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
    from expertline.reporting.migrate import upgrade_url

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


# The command modules import what their commands need when they run (alembic, the tables, a
# node's parts): every command pays only for its own, and the command line starts in about a
# second.
for part in (node_cli, config_cli, reporting_cli, bench_cli, backup_cli, users_cli):
    part.register(app)

# Options of the whole command that may also be given after the subcommand.
GLOBAL_OPTIONS = ("--db", "--data-dir")


def hoist_globals(args: Sequence[str]) -> list[str]:
    """``args`` with the global options moved before the subcommand, wherever they were given
    (``expertline tokens list --db URL`` is ``expertline --db URL tokens list``)."""
    hoisted: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest.extend(args[i:])
            break
        name = arg.split("=", 1)[0]
        if name in GLOBAL_OPTIONS:
            if "=" in arg:
                hoisted.append(arg)
            else:
                hoisted.extend(args[i : i + 2])
                i += 1
        else:
            rest.append(arg)
        i += 1
    return hoisted + rest


def main(argv: Sequence[str] | None = None) -> None:
    """Run the command line. Every error is one line on stderr and a non-zero exit status;
    ``EXPERTLINE_TRACEBACK=1`` shows the traceback of an unexpected one."""
    args = hoist_globals(sys.argv[1:] if argv is None else argv)
    try:
        code = app(args=args, prog_name="expertline", standalone_mode=False)
    except typer.TyperException as exc:  # usage errors and bad parameters
        ctx = getattr(exc, "ctx", None)
        hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
        _say(exc.format_message() + hint)
        sys.exit(exc.exit_code)
    except typer.Abort:
        _say("interrupted")
        sys.exit(130)
    except ExpertlineError as exc:
        _say(exc.message)
        for problem in exc.details:
            err.print(f"  {problem}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except DatabaseError as exc:
        if _traceback_wanted():
            raise
        _say(str(exc))
        sys.exit(2)
    except Exception as exc:
        if _traceback_wanted():
            raise
        _say(f"{type(exc).__name__}: {exc} (EXPERTLINE_TRACEBACK=1 shows where)")
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


def _traceback_wanted() -> bool:
    return os.environ.get("EXPERTLINE_TRACEBACK", "") not in ("", "0")


def _say(message: str) -> None:
    err.print(f"error: {one_line(message)}", markup=False, highlight=False, soft_wrap=True)
