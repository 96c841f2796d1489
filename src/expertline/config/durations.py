"""Durations in the configuration: ``20s``, ``5m``, ``1h30m``, ``500ms``, each with one canonical
spelling, and the pydantic type that reads and writes them."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

from expertline.errors import clip

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_UNIT_ORDER = ("h", "m", "s", "ms")


def parse_duration(value: Any) -> float:
    """``20s``, ``5m``, ``1h``, ``1h30m``, ``500ms`` or a number of seconds -> seconds.

    Units must appear at most once and from largest to smallest, so every duration has one
    canonical spelling (see ``format_duration``).
    """
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 20s, 5m, 1h or 1h30m")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(
            "expected a duration such as 20s, 5m, 1h or 1h30m, not a non-finite number"
        )
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        pos = 0
        seconds = 0.0
        last_unit = -1
        for match in _DURATION_PART.finditer(text):
            unit = _UNIT_ORDER.index(match.group(2))
            if match.start() != pos or unit <= last_unit:
                break
            seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
            pos = match.end()
            last_unit = unit
        if not text or pos != len(text):
            raise ValueError(
                f"bad duration {clip(value)}: expected a duration such as 20s, 5m, 1h or 1h30m"
            )
    else:
        raise ValueError("expected a duration such as 20s, 5m, 1h or 1h30m")
    if seconds < 0 or seconds != seconds or seconds > 366 * 86400:
        raise ValueError(f"duration {clip(value)} is out of range (0 to 366 days)")
    return round(seconds, 3)


def format_duration(seconds: float) -> str:
    """The canonical spelling: ``0s``, ``20s``, ``1h30m``, ``2s500ms``."""
    millis = round(seconds * 1000)
    if millis == 0:
        return "0s"
    parts = []
    for unit in _UNIT_ORDER:
        size = round(_UNIT_SECONDS[unit] * 1000)
        count, millis = divmod(millis, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^(\d+h)?(\d+m)?(\d+s)?(\d+ms)?$",
            "examples": ["20s", "5m", "1h30m"],
            "description": "A duration: 20s, 5m, 1h, 1h30m, 500ms (or a number of seconds).",
        }
    ),
]
