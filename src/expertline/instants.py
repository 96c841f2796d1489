"""Instants: POSIX seconds split as ``datetime.fromtimestamp`` splits them, time-ordered ids.

Hot paths (feed records, API times, SQLite time text) build their text forms from a cached
whole-second prefix and this split, without a datetime per instant; their tests compare them
with the ``datetime`` forms.
"""

from __future__ import annotations

import math
import os
import time


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
