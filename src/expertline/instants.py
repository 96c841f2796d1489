"""Instants: their one text form, POSIX seconds split as ``datetime.fromtimestamp`` splits
them, time-ordered ids.

``iso`` writes every instant that leaves the product as text (the API, feed records, reports,
webhooks): ISO 8601 in UTC with milliseconds and ``Z``, ``2026-11-25T10:00:00.632Z``. Hot paths
(feed records, API times, SQLite time text) build their text forms from a cached whole-second
prefix and this split, without a datetime per instant; their tests compare them with the
``datetime`` forms.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any


def split(ts: float) -> tuple[int, int]:
    """Whole seconds and microseconds, rounded half to even as ``datetime.fromtimestamp``."""
    frac, whole = math.modf(ts)
    secs = int(whole)
    us = round(frac * 1e6)
    if us >= 1_000_000:
        secs, us = secs + 1, us - 1_000_000
    elif us < 0:
        secs, us = secs - 1, us + 1_000_000
    return secs, us


@lru_cache(maxsize=8192)
def iso(value: float | datetime | None) -> str | None:
    """The text of an instant, given as POSIX seconds or a datetime (naive means UTC): ISO 8601
    in UTC with milliseconds and ``Z``. None stays None.

    Cached: the same instants recur in a task's events, records, views and expert states (a
    hit costs no Python call). POSIX seconds give the same text as ``datetime.fromtimestamp``,
    built from a per-second prefix (most events of a busy second share it)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        moment = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"
    secs, us = split(value)
    return f"{_second(secs)}.{us // 1000:03d}Z"


@lru_cache(maxsize=4096)
def _second(secs: int) -> str:
    return datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def instants_as_text(data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` with the instants it keeps as POSIX seconds (keys ``at`` and ``*_at``) as text."""
    return {
        key: iso(value)
        if (key == "at" or key.endswith("_at"))
        and isinstance(value, int | float)
        and not isinstance(value, bool)
        else value
        for key, value in data.items()
    }


def time_ordered_id(now_ns: int | None = None) -> str:
    """A UUID version 7 (RFC 9562) as 32 hex digits: 48 bits of Unix milliseconds, then 74
    random bits. Ids made later sort later, so every index keyed by them (the feed's task
    index, task, offer and record tables) grows at its end instead of at random pages: a
    commit rewrites a few hot pages rather than one scattered page per row."""
    ms = (time.time_ns() if now_ns is None else now_ns) // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")  # 80 bits, 74 used
    value = (
        (ms & ((1 << 48) - 1)) << 80
        | 0x7 << 76  # version
        | ((rand >> 62) & 0xFFF) << 64  # rand_a, 12 bits
        | 0b10 << 62  # variant
        | (rand & ((1 << 62) - 1))  # rand_b, 62 bits
    )
    return f"{value:032x}"
