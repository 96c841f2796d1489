"""``expertline report queues|experts|tasks``: the same rows as the REST API, on the terminal."""

from __future__ import annotations

import sys
from enum import StrEnum
from typing import Annotated, Any

import typer

from expertline.cli_support import GLOBALS, fail, out


class Output(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


FromOpt = Annotated[
    str | None, typer.Option("--from", help="Start, ISO 8601 UTC (default: 24 hours before --to).")
]
ToOpt = Annotated[str | None, typer.Option("--to", help="End, ISO 8601 UTC (default: now).")]
IntervalOpt = Annotated[str, typer.Option("--interval", help="15m | 30m | 60m (queue report).")]
FormatOpt = Annotated[Output, typer.Option("--format", help="table | csv | json.")]


def register(app: typer.Typer) -> None:
    report_app = typer.Typer(
        help="Reports from the reporting database (SPEC §6).", no_args_is_help=True
    )
    app.add_typer(report_app, name="report")

    @report_app.command("queues")
    def queues(
        start: FromOpt = None,
        end: ToOpt = None,
        interval: IntervalOpt = "15m",
        fmt: FormatOpt = Output.table,
    ) -> None:
        """Queue figures per interval: offered, handled, abandoned, waits, service level."""
        _run("queues", start, end, interval, fmt)

    @report_app.command("experts")
    def experts(
        start: FromOpt = None,
        end: ToOpt = None,
        interval: IntervalOpt = "15m",
        fmt: FormatOpt = Output.table,
    ) -> None:
        """Per expert: offers and answers, handled tasks, time per state, utilization."""
        _run("experts", start, end, interval, fmt)

    @report_app.command("tasks")
    def tasks(
        start: FromOpt = None,
        end: ToOpt = None,
        interval: IntervalOpt = "15m",
        fmt: FormatOpt = Output.table,
    ) -> None:
        """One row per ended task, with its offers."""
        _run("tasks", start, end, interval, fmt)


def _run(name: str, start: str | None, end: str | None, interval: str, fmt: Output) -> None:
    import json

    from expertline.db.engine import DatabaseError, make_engine
    from expertline.errors import InvalidInput
    from expertline.reporting import migrate
    from expertline.reporting.reports import (
        expert_report,
        parse_range,
        queue_report,
        task_report,
        to_csv,
    )
    from expertline.reporting.terminal import report_table

    try:
        rng = parse_range(start, end, interval)
    except InvalidInput as exc:
        fail("; ".join(str(p) for p in exc.details) or exc.message)
    settings = GLOBALS.settings()
    try:
        engine = make_engine(settings.reporting_db_url)
        migrate.require_current(engine)
    except DatabaseError as exc:
        fail(str(exc))
    rows: list[dict[str, Any]]
    if name == "queues":
        rows = queue_report(engine, rng)
    elif name == "experts":
        rows = expert_report(engine, rng)
    else:
        rows, _ = task_report(engine, rng)
    engine.dispose()
    if fmt is Output.json:
        sys.stdout.write(json.dumps({"items": rows}, indent=2) + "\n")
    elif fmt is Output.csv:
        for chunk in to_csv(name, rows):
            sys.stdout.write(chunk.replace("\r\n", "\n"))
    else:
        title = f"{name} {rng.start:%Y-%m-%d %H:%M} to {rng.end:%Y-%m-%d %H:%M} UTC"
        table, legend = report_table(name, rows, title)
        out.print(table)
        out.print(f"{len(rows)} row(s)", highlight=False)
        if legend:
            out.print(legend, highlight=False)
