"""``expertline users ...``: the people who sign in to the web pages with a password.

Passwords are read from the terminal (asked twice) or, when standard input is not a terminal,
from its first line, so they never appear in a command line or a shell history.
"""

from __future__ import annotations

import getpass
import sys
from typing import Annotated

import typer
from rich.table import Table

from expertline.cli_support import fail, migrated_engine, out
from expertline.web import users

users_app = typer.Typer(help="People who sign in to the web pages.", no_args_is_help=True)


def _password(confirm: bool = True) -> str:

    if not sys.stdin.isatty():
        line = sys.stdin.readline()
        if not line:
            fail("no password on standard input (give it on the first line)")
        return line.rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if confirm and getpass.getpass("Password again: ") != first:
        fail("the two passwords differ; nothing was changed")
    return first


@users_app.command("create")
def users_create(
    username: str,
    role: Annotated[str, typer.Option("--role", help="admin | supervisor | reporting | expert")],
    expert: Annotated[
        str | None,
        typer.Option(
            "--expert", metavar="EXPERT_ID", help="For --role expert: the expert this user is."
        ),
    ] = None,
) -> None:
    """Create a user; the password is asked for (or read from standard input)."""

    engine = migrated_engine()
    user = users.create_user(engine, username, role, _password(), expert)
    bound = f" for expert {user.expert_id!r}" if user.expert_id else ""
    out.print(f"created user {user.username!r} with role {user.role}{bound}", highlight=False)


@users_app.command("list")
def users_list() -> None:
    """List users (never their passwords)."""

    table = Table("username", "role", "expert", "created", "disabled")
    for u in users.list_users(migrated_engine()):
        table.add_row(
            u.username,
            u.role,
            u.expert_id or "",
            u.created_at.isoformat(timespec="seconds"),
            u.disabled_at.isoformat(timespec="seconds") if u.disabled_at else "",
        )
    out.print(table)


@users_app.command("password")
def users_password(username: str) -> None:
    """Set a new password (asked for, or read from standard input); the user's sessions end."""

    engine = migrated_engine()
    users.get_user(engine, username)
    users.set_password(engine, username, _password())
    out.print(f"password of {username!r} changed; its sessions ended", highlight=False)


@users_app.command("disable")
def users_disable(username: str) -> None:
    """Stop a user from signing in; the user's sessions end at once."""

    users.disable_user(migrated_engine(), username)
    out.print(f"user {username!r} disabled", highlight=False)


@users_app.command("enable")
def users_enable(username: str) -> None:
    """Let a disabled user sign in again."""

    users.enable_user(migrated_engine(), username)
    out.print(f"user {username!r} enabled", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(users_app, name="users")
