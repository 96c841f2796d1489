"""Shared benchmark plumbing: measured rows, targets, a Rich table, a JSON file.

A benchmark is a module ``expertline.bench.<name>`` with ``run(options: BenchOptions) ->
BenchResult``. Benchmarks measure; they never decide test outcomes.
"""

from __future__ import annotations

import json
import platform
import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from rich.table import Table


@dataclass
class BenchOptions:
    scale: float = 1.0  # fraction of the full workload (1.0 = the sizes the targets name)
    db: str | None = None  # database URL; default: a temporary SQLite file
    out: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    only: frozenset[str] = frozenset()  # section keys to run; empty: every section

    def selected(self, key: str) -> bool:
        """Whether the section ``key`` runs (``--only`` narrows a benchmark while iterating)."""
        return not self.only or key in self.only

    def check_sections(self, keys: list[str]) -> None:
        """Refuse ``--only`` names the benchmark does not have (a typo must not run nothing)."""
        unknown = sorted(self.only - set(keys))
        if unknown:
            raise ValueError(f"unknown section {', '.join(unknown)}; sections: {', '.join(keys)}")


@dataclass
class Measurement:
    metric: str
    value: float
    unit: str
    target: str | None = None  # e.g. "<= 20"
    met: bool | None = None
    context: str = ""  # what was measured: sizes, backend

    def check(self) -> Measurement:
        if self.target:
            op, _, bound = self.target.partition(" ")
            limit = float(bound)
            self.met = self.value <= limit if op == "<=" else self.value >= limit
        return self


@dataclass
class BenchResult:
    name: str
    measurements: list[Measurement] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(
        self, metric: str, value: float, unit: str, target: str | None = None, context: str = ""
    ) -> None:
        self.measurements.append(Measurement(metric, value, unit, target, None, context).check())


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float:
    return psutil.Process().memory_info().rss / (1024.0 * 1024.0)


class Stopwatch:
    def __init__(self) -> None:
        self.started = time.perf_counter()

    def seconds(self) -> float:
        return time.perf_counter() - self.started


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    sw = Stopwatch()
    value = fn()
    return sw.seconds(), value


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(pct / 100.0 * (len(ordered) - 1))))
    return ordered[k]


def report(result: BenchResult, out: Path | None, console: Console | None = None) -> Path:
    """Print the table and write the JSON; returns the JSON path."""
    console = console or Console()
    table = Table(title=f"expertline bench {result.name}")
    for col in ("metric", "value", "unit", "target", "met", "context"):
        table.add_column(col, justify="right" if col == "value" else "left")
    for m in result.measurements:
        met = "" if m.met is None else ("yes" if m.met else "NO")
        table.add_row(m.metric, f"{m.value:,.3f}", m.unit, m.target or "", met, m.context)
    console.print(table)
    for note in result.notes:
        console.print(f"note: {note}", highlight=False)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = out or Path("bench-results") / f"{result.name}-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": result.name,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": psutil.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "measurements": [asdict(m) for m in result.measurements],
        "notes": result.notes,
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")
    console.print(f"results written to {path}", highlight=False)
    return path
