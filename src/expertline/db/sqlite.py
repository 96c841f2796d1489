"""SQLite connection settings and value forms, with no SQLAlchemy in the import path.

The runtime's writer process imports only this and ``runtime/sqlwrite.py``, so it starts in
a few tens of milliseconds. ``db/engine.py`` uses the same functions for every SQLAlchemy
connection, so both write and read the same database the same way.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson

from expertline.instants import split

BUSY_TIMEOUT_S = 30.0


def configure(dbapi_connection: Any) -> None:
    """Durable settings of every connection: WAL, full fsync on commit, foreign keys."""
    # The caller drives transactions (pysqlite's implicit BEGIN is disabled).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
    # Multi-row upserts (the runtime's batches) sort through a temporary b-tree: in memory,
    # not a temporary file. A 32 MiB page cache (the default is 2 MiB) keeps the indexes'
    # hot pages of a busy routing database in memory instead of re-reading them.
    cursor.execute("PRAGMA temp_store=MEMORY")
    cursor.execute("PRAGMA cache_size=-32768")
    cursor.close()


# Writers that bypass SQLAlchemy's per-value processing (the runtime's commits, reporting
# ingestion) store values exactly as its types would, so every reader sees the same data.


def sqlite_time(value: datetime | float) -> str:
    """A time as SQLAlchemy stores a DateTime on SQLite: UTC, ``%Y-%m-%d %H:%M:%S.%f``.

    ``value`` is a datetime (a naive one is taken as UTC already, as ``as_utc`` reads it
    back) or POSIX seconds, which is what the runtime's rows carry."""
    if not isinstance(value, datetime):
        return _seconds_text(value)
    if value.tzinfo is not None and value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.isoformat(" ", "microseconds")[:26]  # == strftime of that format, faster


def _seconds_text(ts: float) -> str:
    """``sqlite_time`` of POSIX seconds without a datetime: the date and time of the whole
    second come from a small cache (a batch's instants share a few seconds)."""
    secs, us = split(ts)
    return f"{_second_text(secs)}.{us:06d}"


@lru_cache(maxsize=1024)
def _second_text(secs: int) -> str:
    return datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%d %H:%M:%S")


def json_text(value: Any) -> str:
    """JSON text for a JSON column (both databases take text); compact, keys need not be
    strings, and values beyond orjson (integers over 64 bits) go through the standard library."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(value, separators=(",", ":"))
