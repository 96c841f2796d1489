"""``expertline backup create|verify|restore``: see ``expertline.backup.archive``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from expertline.cli_support import GLOBALS, fail, out

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from expertline.backup.archive import Summary

ReportingOpt = Annotated[
    bool,
    typer.Option(
        "--reporting",
        help="Use the reporting database (EXPERTLINE_REPORTING_DB) instead of the main one; "
        "needed only where reporting has a database of its own.",
    ),
]


def register(app: typer.Typer) -> None:
    backup_app = typer.Typer(
        help="Backups: a consistent, checksummed archive of a database (SPEC §8).",
        no_args_is_help=True,
    )
    app.add_typer(backup_app, name="backup")

    @backup_app.command("create")
    def create(
        file: Annotated[
            Path | None,
            typer.Argument(help="Archive to write (default: expertline-backup-<UTC time>.tar.gz)."),
        ] = None,
        reporting: ReportingOpt = False,
    ) -> None:
        """Write a consistent archive of the database; nodes may keep running."""
        from expertline.backup import archive

        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        path = file or Path(f"expertline-backup-{stamp}.tar.gz")
        with _engine(reporting) as engine:
            summary = archive.create(engine, path)
        _show(summary, f"backup written to {summary.path}")

    @backup_app.command("verify")
    def verify(file: Annotated[Path, typer.Argument(help="Archive to check.")]) -> None:
        """Check an archive's checksums, row counts and schema revisions (no database)."""
        from expertline.backup import archive

        _show(archive.verify(file), f"{file}: intact")

    @backup_app.command("restore")
    def restore(
        file: Annotated[Path, typer.Argument(help="Archive to load.")],
        reporting: ReportingOpt = False,
    ) -> None:
        """Load an archive into an empty database and upgrade it to this release's schema."""
        from expertline.backup import archive

        with _engine(reporting) as engine:
            summary = archive.restore(engine, file)
        _show(summary, f"restored {file}")


@contextlib.contextmanager
def _engine(reporting: bool) -> Iterator[Engine]:
    """The main database's engine, or the reporting one's; disposed afterwards."""
    from expertline.db.engine import DatabaseError, make_engine

    settings = GLOBALS.settings()
    try:
        engine = make_engine(settings.reporting_db_url if reporting else settings.db_url)
    except DatabaseError as exc:
        fail(str(exc))
    try:
        yield engine
    finally:
        engine.dispose()


def _show(summary: Summary, headline: str) -> None:
    from rich.table import Table

    revisions = ", ".join(f"{label} {rev}" for label, rev in summary.revisions.items())
    out.print(
        f"{headline}: {len(summary.tables)} tables, {summary.rows:,} rows, "
        f"{summary.size:,} bytes; made {summary.created_at} on {summary.dialect}; {revisions}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    table = Table("table", "rows")
    for t in summary.tables:
        table.add_row(t.name, f"{t.rows:,}")
    out.print(table)
