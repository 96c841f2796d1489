"""``expertline bench NAME``: run a benchmark, print a table, write JSON."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from expertline.bench import config, ha, reporting, routing, sip, xmpp
from expertline.bench.common import BenchOptions, BenchResult, report
from expertline.cli_support import fail

BENCHMARKS: dict[str, Callable[[BenchOptions], BenchResult]] = {
    "config": config.run,
    "ha": ha.run,
    "reporting": reporting.run,
    "routing": routing.run,
    "sip": sip.run,
    "xmpp": xmpp.run,
}


def available() -> list[str]:
    return sorted(BENCHMARKS)


def register(app: typer.Typer) -> None:
    @app.command("bench")
    def bench(
        name: Annotated[str, typer.Argument(help="Benchmark to run: " + ", ".join(available()))],
        scale: Annotated[
            float, typer.Option(help="Fraction of the full workload (1.0 = target sizes).")
        ] = 1.0,
        db: Annotated[
            str | None, typer.Option("--bench-db", help="Database URL (default: temporary SQLite).")
        ] = None,
        out: Annotated[Path | None, typer.Option(help="JSON output file.")] = None,
        only: Annotated[
            str | None,
            typer.Option(help="Comma-separated sections to run (default: all), e.g. durable10k."),
        ] = None,
    ) -> None:
        """Run a benchmark; prints a table and writes the figures as JSON."""
        run = BENCHMARKS.get(name)
        if run is None:
            fail(f"unknown benchmark {name!r}; available: {', '.join(available())}")
        if not 0 < scale <= 10:
            fail("--scale must be in (0, 10]")
        sections = frozenset(s.strip() for s in (only or "").split(",") if s.strip())
        try:
            result = run(BenchOptions(scale=scale, db=db, out=out, only=sections))
        except ValueError as exc:
            fail(str(exc))
        report(result, out)
