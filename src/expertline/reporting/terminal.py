"""Report tables for an 80-column terminal (``expertline report ... --format table``).

CSV and JSON carry every column under its full name; a terminal table cannot show thirteen
columns that way in 80 characters, so the queue report is laid out here: short headers
explained in a legend under the table, times of day without the date the title already
gives, waits in whole seconds, service levels in percent, and the queue's name under its id.
Columns have no borders between them, only a space. The other reports use their column names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rich import box
from rich.table import Table

from expertline.reporting.reports import COLUMNS, flat

WIDTH = 80  # what the tables are laid out for (a wider terminal just has room to spare)


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    show: Callable[[Any], str]
    numeric: bool = True


def _count(value: Any) -> str:
    return "" if value is None else str(value)


def _seconds(value: Any) -> str:
    return "" if value is None else f"{float(value):.0f}"


def _percent(value: Any) -> str:
    return "" if value is None else f"{float(value) * 100:.0f}%"


QUEUE_LAYOUT = (
    Column("offered", "off", _count),
    Column("handled", "hdl", _count),
    Column("abandoned", "abd", _count),
    Column("overflowed", "ovf", _count),
    Column("rejected", "rej", _count),
    Column("avg_wait", "avg\nwait", _seconds),
    Column("max_wait", "max\nwait", _seconds),
    Column("service_level", "SL", _percent),
    Column("avg_handle_time", "AHT", _seconds),
    Column("service_level_2", "SL2", _percent),
)
QUEUE_LEGEND = (
    "off offered, hdl handled, abd abandoned, ovf overflowed, rej rejected; avg/max wait "
    "and AHT (average handle time) in seconds; SL service level, SL2 counting abandons. "
    "Every column, full names: --format csv or json."
)


def report_table(name: str, rows: list[dict[str, Any]], title: str) -> tuple[Table, str | None]:
    """The table for report ``name`` and the legend to print under it (or None)."""
    if name == "queues":
        return _queue_table(rows, title), QUEUE_LEGEND
    table = Table(*COLUMNS[name], title=title)
    for row in rows:
        r = flat(name, row)
        table.add_row(*("" if r[c] is None else str(r[c]) for c in COLUMNS[name]))
    return table, None


def _queue_table(rows: list[dict[str, Any]], title: str) -> Table:
    starts = [_instant(r["interval_start"]) for r in rows]
    one_day = len({s.date() for s in starts}) <= 1
    table = Table(
        title=title, box=box.SIMPLE_HEAD, padding=0, show_edge=False, collapse_padding=True
    )
    table.add_column("start" if one_day else "start\n(UTC)", no_wrap=True)
    table.add_column("queue", overflow="fold", ratio=1)
    for column in QUEUE_LAYOUT:
        table.add_column(column.header, justify="right", no_wrap=True)
    for row, start in zip(rows, starts, strict=True):
        when = f"{start:%H:%M}" if one_day else f"{start:%m-%d}\n{start:%H:%M}"
        queue = row["queue_id"]
        if row.get("queue_name") and row["queue_name"] != queue:
            queue = f"{queue}\n{row['queue_name']}"
        table.add_row(when, queue, *(c.show(row.get(c.key)) for c in QUEUE_LAYOUT))
    return table


def _instant(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
