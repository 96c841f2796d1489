"""The queue report reads at 80 columns: nothing cut, no line longer than the terminal."""

from __future__ import annotations

import io

from rich.console import Console

from expertline.reporting.terminal import QUEUE_LEGEND, WIDTH, report_table


def _row(start: str, queue: str, name: str, **figures: float) -> dict[str, object]:
    values = {
        "offered": 1234,
        "handled": 1000,
        "abandoned": 200,
        "overflowed": 30,
        "rejected": 4,
        "avg_wait": 27.5,
        "max_wait": 3600.0,
        "service_level": 0.875,
        "avg_handle_time": 1117.5,
        "service_level_2": 1.0,
    }
    return {"interval_start": start, "queue_id": queue, "queue_name": name, **values, **figures}


def _render(rows: list[dict[str, object]], width: int = WIDTH) -> str:
    table, legend = report_table("queues", rows, "queues 2026-11-25 00:00 to 2026-11-27 00:00 UTC")
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(table)
    console.print(legend)
    return console.file.getvalue()  # type: ignore[attr-defined]


def test_the_queue_report_fits_80_columns_with_every_figure_whole() -> None:
    rows = [
        _row("2026-11-25T10:00:00Z", "billing", "Billing Desk"),
        _row(
            "2026-11-26T23:45:00Z",
            "premium-support-emea-weekend",
            "Premium Support EMEA (weekends)",
        ),
        _row("2026-11-26T23:45:00Z", "sales", "sales", service_level=None, avg_wait=None),
    ]
    text = _render(rows)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= WIDTH, text
    assert "…" not in text  # nothing is cut
    header = "\n".join(lines[1:4])
    for short in ("start", "queue", "off", "hdl", "abd", "ovf", "rej", "wait", "SL", "AHT", "SL2"):
        assert short in header, short
    for figure in ("1234", "1000", "200", "30", "28", "3600", "88%", "1118", "100%"):
        assert figure in text, figure
    assert "11-26" in text and "23:45" in text  # a range over several days shows the date
    assert "Billing Desk" in text
    compact = text.replace("\n", "").replace(" ", "")
    assert "premium-support-emea-weekend" in compact  # a long id wraps, whole
    assert "off offered" in text and QUEUE_LEGEND.split()[-1] in text


def test_one_day_shows_times_only() -> None:
    text = _render([_row("2026-11-25T10:15:00Z", "billing", "Billing")])
    assert "10:15" in text and "11-25\n" not in text
    assert max(len(line) for line in text.splitlines()) <= WIDTH
