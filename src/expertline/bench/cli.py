"""``expertline bench NAME``: run a benchmark, print a table, write JSON."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Annotated

import typer

from expertline.bench.common import BenchOptions, report


def available() -> list[str]:
    import expertline.bench as pkg

    return sorted(
        m.name
        for m in pkgutil.iter_modules(pkg.__path__)
        if m.name not in {"cli", "common"} and not m.name.startswith("_")
    )


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
        from expertline.cli import fail

        if name not in available():
            fail(f"unknown benchmark {name!r}; available: {', '.join(available()) or 'none'}")
        if not 0 < scale <= 10:
            fail("--scale must be in (0, 10]")
        module = importlib.import_module(f"expertline.bench.{name}")
        sections = frozenset(s.strip() for s in (only or "").split(",") if s.strip())
        try:
            result = module.run(BenchOptions(scale=scale, db=db, out=out, only=sections))
        except ValueError as exc:
            fail(str(exc))
        report(result, out)
