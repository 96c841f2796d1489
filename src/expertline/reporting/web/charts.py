"""Charts as inline SVG, drawn on the server: no script, nothing to vendor, works in any browser
and in a printed page. Pure functions from numbers to markup; every label is escaped.
"""

from __future__ import annotations

from dataclasses import dataclass

from markupsafe import Markup, escape

WIDTH = 760
HEIGHT = 260
PAD_LEFT = 48
PAD_RIGHT = 48
PAD_TOP = 16
PAD_BOTTOM = 40

COLORS = {"handled": "#2e7d32", "abandoned": "#c62828", "other": "#f9a825", "sl": "#1565c0"}


@dataclass(frozen=True)
class VolumePoint:
    label: str  # x-axis label (interval start, HH:MM)
    handled: int
    abandoned: int
    other: int  # overflowed + rejected (failed tasks are in none of the bars)
    service_level: float | None  # 0..1


def _nice_max(value: float) -> float:
    """A round axis maximum at or above ``value``."""
    if value <= 0:
        return 1.0
    for step in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10000):
        if value <= step * 5:
            return float(step * 5 if value > step * 4 else step * 4)
    return float(value)


def volume_chart(points: list[VolumePoint], title: str) -> Markup:
    """Stacked bars (handled, abandoned, other) per interval, service level as a line (right
    axis, 0-100 %)."""
    plot_w = WIDTH - PAD_LEFT - PAD_RIGHT
    plot_h = HEIGHT - PAD_TOP - PAD_BOTTOM
    parts: list[str] = [
        f'<svg class="chart" role="img" aria-label="{escape(title)}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="100%" xmlns="http://www.w3.org/2000/svg" data-chart="queue-volume">',
        f"<title>{escape(title)}</title>",
    ]
    if not points:
        parts.append(
            f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle" class="empty">'
            "no tasks in this range</text></svg>"
        )
        return Markup("".join(parts))
    top = _nice_max(max(p.handled + p.abandoned + p.other for p in points))
    slot = plot_w / len(points)
    bar_w = max(2.0, slot * 0.7)
    base = PAD_TOP + plot_h
    for i in range(5):  # grid and left axis
        value = top * i / 4
        y = base - plot_h * i / 4
        parts.append(
            f'<line x1="{PAD_LEFT}" x2="{WIDTH - PAD_RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{PAD_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" class="axis">{value:g}</text>'
            f'<text x="{WIDTH - PAD_RIGHT + 6}" y="{y + 4:.1f}" class="axis">{25 * i}%</text>'
        )
    label_every = max(1, len(points) // 12)
    line: list[str] = []
    for i, p in enumerate(points):
        x = PAD_LEFT + i * slot + (slot - bar_w) / 2
        y = base
        for key, count in (("handled", p.handled), ("abandoned", p.abandoned), ("other", p.other)):
            if count <= 0:
                continue
            h = plot_h * count / top
            y -= h
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                f'fill="{COLORS[key]}" data-series="{key}" data-value="{count}">'
                f"<title>{escape(p.label)} {key}: {count}</title></rect>"
            )
        if p.service_level is not None:
            cx = PAD_LEFT + i * slot + slot / 2
            cy = base - plot_h * p.service_level
            line.append(f"{cx:.1f},{cy:.1f}")
            parts.append(
                f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="3" fill="{COLORS["sl"]}" '
                f'data-series="service_level" data-value="{p.service_level:.4f}">'
                f"<title>{escape(p.label)} service level: {p.service_level:.0%}</title></circle>"
            )
        if i % label_every == 0:
            parts.append(
                f'<text x="{PAD_LEFT + i * slot + slot / 2:.1f}" y="{base + 16}" '
                f'text-anchor="middle" class="axis">{escape(p.label)}</text>'
            )
    if len(line) > 1:
        parts.append(
            f'<polyline points="{" ".join(line)}" fill="none" stroke="{COLORS["sl"]}" '
            'stroke-width="2" data-series="service_level_line"/>'
        )
    parts.append(
        _legend(
            [
                ("handled", "handled"),
                ("abandoned", "abandoned"),
                ("other", "overflowed/rejected"),
                ("sl", "service level"),
            ]
        )
    )
    parts.append("</svg>")
    return Markup("".join(parts))


def utilization_chart(rows: list[tuple[str, float | None]], title: str) -> Markup:
    """One horizontal bar per expert: utilization 0-100 %."""
    row_h = 26
    height = PAD_TOP + row_h * max(1, len(rows)) + 24
    label_w = 180
    plot_w = WIDTH - label_w - 60
    parts = [
        f'<svg class="chart" role="img" aria-label="{escape(title)}" viewBox="0 0 {WIDTH} {height}" '
        f'width="100%" xmlns="http://www.w3.org/2000/svg" data-chart="expert-utilization">',
        f"<title>{escape(title)}</title>",
    ]
    if not rows:
        parts.append(
            f'<text x="{WIDTH / 2}" y="{height / 2}" text-anchor="middle" class="empty">'
            "no expert activity in this range</text></svg>"
        )
        return Markup("".join(parts))
    for i in range(5):
        x = label_w + plot_w * i / 4
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{PAD_TOP}" y2="{height - 24}" class="grid"/>'
            f'<text x="{x:.1f}" y="{height - 8}" text-anchor="middle" class="axis">{25 * i}%</text>'
        )
    for i, (name, value) in enumerate(rows):
        y = PAD_TOP + i * row_h
        parts.append(
            f'<text x="{label_w - 8}" y="{y + row_h / 2 + 4:.1f}" text-anchor="end" class="axis">'
            f"{escape(name)}</text>"
        )
        share = value or 0.0
        parts.append(
            f'<rect x="{label_w}" y="{y + 4}" width="{plot_w * share:.1f}" height="{row_h - 8}" '
            f'fill="{COLORS["sl"]}" data-series="utilization" data-value="{share:.4f}">'
            f"<title>{escape(name)}: {share:.1%}</title></rect>"
            f'<text x="{label_w + plot_w * share + 6:.1f}" y="{y + row_h / 2 + 4:.1f}" '
            f'class="axis">{"n/a" if value is None else f"{share:.1%}"}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def _legend(items: list[tuple[str, str]]) -> str:
    out = []
    x = PAD_LEFT
    y = HEIGHT - 10
    for key, text in items:
        out.append(
            f'<rect x="{x}" y="{y - 9}" width="10" height="10" fill="{COLORS[key]}"/>'
            f'<text x="{x + 14}" y="{y}" class="axis">{escape(text)}</text>'
        )
        x += 24 + 7 * len(text)
    return "".join(out)
