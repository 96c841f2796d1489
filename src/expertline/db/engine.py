"""Database engines: SQLite (single node, default) and PostgreSQL (HA), same schema."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url


class DatabaseError(Exception):
    """The database cannot be used: unreachable, wrong schema version, bad URL."""


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine with durable settings: SQLite in WAL mode with full fsync on commit."""
    try:
        parsed = make_url(url)
    except Exception as exc:  # sqlalchemy raises ArgumentError with a long text
        raise DatabaseError(f"bad database URL {url!r}: {exc}") from exc
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 10)
    return create_engine(url, **kwargs)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy drive transactions (pysqlite's implicit BEGIN is disabled).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    # Multi-row upserts (the runtime's batches) sort through a temporary b-tree: in memory,
    # not a temporary file. A 32 MiB page cache (the default is 2 MiB) keeps the indexes'
    # hot pages of a busy routing database in memory instead of re-reading them.
    cursor.execute("PRAGMA temp_store=MEMORY")
    cursor.execute("PRAGMA cache_size=-32768")
    cursor.close()


def _sqlite_begin(connection: Any) -> None:
    connection.exec_driver_sql("BEGIN")


def as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; they were written as UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# Writers that bypass SQLAlchemy's per-value processing (the runtime's commits, reporting
# ingestion) store values exactly as its types would, so every reader sees the same data.


def sqlite_time(value: datetime) -> str:
    """A datetime as SQLAlchemy stores a DateTime on SQLite: UTC, ``%Y-%m-%d %H:%M:%S.%f``
    (a naive datetime is taken as UTC already, as ``as_utc`` reads it back)."""
    if value.tzinfo is not None and value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.isoformat(" ", "microseconds")[:26]  # == strftime of that format, faster


def json_text(value: Any) -> str:
    """JSON text for a JSON column (both databases take text); compact, keys need not be
    strings, and values beyond orjson (integers over 64 bits) go through the standard library."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(value, separators=(",", ":"))
