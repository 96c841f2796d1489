"""POSIX seconds split the way ``datetime.fromtimestamp`` splits them.

Hot paths (feed records, API times, SQLite time text) build their text forms from a cached
whole-second prefix and this split, without a datetime per instant; their tests compare them
with the ``datetime`` forms.
"""

from __future__ import annotations

import math


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
