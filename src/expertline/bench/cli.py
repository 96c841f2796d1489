"""``expertline bench NAME``: run a benchmark, print a table, write JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from expertline.bench.common import BenchOptions, BenchResult, report
from expertline.cli_support import fail

BENCHMARKS = ("config", "ha", "reporting", "routing", "sip", "xmpp")


def available() -> list[str]:
    return sorted(BENCHMARKS)


def run_benchmark(name: str, options: BenchOptions) -> BenchResult:
    """Run one benchmark. Each is imported only when it runs: together they pull in every part
    of the product, its XMPP and SIP peers' clients included."""
    match name:
        case "config":
            from expertline.bench import config

            return config.run(options)
        case "ha":
            from expertline.bench import ha

            return ha.run(options)
        case "reporting":
            from expertline.bench import reporting

            return reporting.run(options)
        case "routing":
            from expertline.bench import routing

            return routing.run(options)
        case "sip":
            from expertline.bench import sip

            return sip.run(options)
        case "xmpp":
            from expertline.bench import xmpp

            return xmpp.run(options)
    raise ValueError(f"unknown benchmark {name!r}; available: {', '.join(available())}")


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
        if name not in BENCHMARKS:
            fail(f"unknown benchmark {name!r}; available: {', '.join(available())}")
        if not 0 < scale <= 10:
            fail("--scale must be in (0, 10]")
        sections = frozenset(s.strip() for s in (only or "").split(",") if s.strip())
        try:
            result = run_benchmark(name, BenchOptions(scale=scale, db=db, out=out, only=sections))
        except ValueError as exc:
            fail(str(exc))
        report(result, out)
