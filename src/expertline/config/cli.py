"""``expertline config import|validate|export|history``.

Problems are printed as one header line and one ``path: message`` line each, the exit status
is non-zero, and nothing is applied: the same all-or-nothing contract as the REST API.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console

from expertline.cli_support import err, fail, migrated_engine, out
from expertline.errors import Problem

if TYPE_CHECKING:
    from expertline.config.schema import ConfigDocument

config_app = typer.Typer(
    help="Configuration: import, validate, export, history.", no_args_is_help=True
)

EXIT_INVALID = 2


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")


def _read(file: str) -> str:

    if file == "-":
        return sys.stdin.read()
    try:
        return Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read {file}: {getattr(exc, 'strerror', None) or exc}")


def _say(text: str, console: Console = out) -> None:
    """Print ``text`` as it is: no markup, no highlighting, long lines kept whole."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def _report(file: str, problems: list[Problem], text: str | None = None) -> NoReturn:
    from expertline.config.validate import with_lines

    n = len(problems)
    if text is not None:
        problems = with_lines(text, problems)
    _say(f"error: {file}: {n} problem{'s' if n != 1 else ''}; nothing was applied", err)
    for problem in problems:
        _say(f"  {problem}", err)
    raise typer.Exit(EXIT_INVALID)


def _checked(file: str) -> ConfigDocument:
    """The configuration in FILE, valid; its problems reported (and exit) when it is not."""
    from expertline.config.validate import check_yaml

    text = _read(file)
    doc, problems = check_yaml(text)
    if doc is None:
        _report(file, problems, text)
    return doc


@config_app.command("validate")
def validate_cmd(
    file: Annotated[str, typer.Argument(help="YAML file ('-' for standard input).")],
) -> None:
    """Check a configuration file without applying it (no database needed)."""
    doc = _checked(file)
    _say(
        f"{file}: valid ({len(doc.attributes)} attributes, {len(doc.experts)} experts, "
        f"{len(doc.queues)} queues, {len(doc.entry_points)} entry points, "
        f"{len(doc.presence)} presence sources, {len(doc.messages)} message sets)"
    )


@config_app.command("import")
def import_cmd(
    file: Annotated[str, typer.Argument(help="YAML file ('-' for standard input).")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate and show what would change; write nothing.")
    ] = False,
) -> None:
    """Apply a whole configuration atomically: every object as in FILE, or nothing."""
    from expertline.config.store import apply_document, cli_actor, plan_document

    doc = _checked(file)
    engine = migrated_engine()
    if dry_run:
        plan = plan_document(engine, doc)
        text = (
            f"dry run: would add {plan.added}, change {plan.changed}, remove {plan.removed} "
            f"objects (current version {plan.version}); nothing was written"
            if not plan.unchanged
            else f"dry run: no changes; the configuration stays at version {plan.version}"
        )
        _say(text)
        return
    result = apply_document(engine, doc, cli_actor(), source="import")
    if result.unchanged:
        _say(f"no changes; the configuration stays at version {result.version}")
    else:
        _say(
            f"applied version {result.version}: added {result.added}, changed "
            f"{result.changed}, removed {result.removed}"
        )


@config_app.command("export")
def export_cmd(
    out_file: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write to this file instead of stdout.")
    ] = None,
) -> None:
    """Print the applied configuration as canonical YAML."""
    from expertline.config.export import export_yaml
    from expertline.config.store import load_document

    version, doc = load_document(migrated_engine())
    text = export_yaml(doc)
    if out_file is None:
        sys.stdout.write(text)
        return
    _write_atomically(out_file, text)
    print(f"wrote version {version} to {out_file}", file=sys.stderr)


def _write_atomically(path: Path, text: str) -> None:

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror or exc}")


@config_app.command("history")
def history_cmd(
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many versions.")] = 20,
) -> None:
    """Applied versions, newest first: when, by whom, what changed."""
    from rich.table import Table

    from expertline.config.store import history

    table = Table("version", "applied", "actor", "source", "+", "~", "-", "summary")
    for v in history(migrated_engine(), limit=limit):
        table.add_row(
            str(v.version),
            v.applied_at.isoformat(timespec="seconds"),
            v.actor,
            v.source,
            str(v.added),
            str(v.changed),
            str(v.removed),
            v.summary,
        )
    out.print(table)
