"""Database engines: SQLite (single node, default) and PostgreSQL (HA), same schema.

On PostgreSQL an HA deployment runs a primary and streaming replicas under a failover manager
(Patroni, pg_auto_failover). The URL may then list every server, as libpq does
(``postgresql://user@db1:5432,db2:5432/expertline?target_session_attrs=read-write``): each
new connection goes to the one that accepts writes. When the primary dies or is demoted, the
errors that say so (connection lost, server shutting down, read-only transaction) drop every
pooled connection at once; the next use connects again and so finds the promoted server.
Each step is one log line. Connecting and a silent peer have time bounds (``connect_timeout``,
TCP keepalives, ``tcp_user_timeout``), so no call waits on a dead host for minutes.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url

from expertline.db.sqlite import BUSY_TIMEOUT_S, configure, json_text, sqlite_time

__all__ = [
    "DatabaseError",
    "as_utc",
    "connect_params",
    "is_sqlite",
    "json_text",
    "make_engine",
    "parse_url",
    "sqlite_time",
]

log = logging.getLogger("expertline.db")


class DatabaseError(Exception):
    """The database cannot be used: unreachable, wrong schema version, bad URL."""


# libpq settings a PostgreSQL connection gets unless the URL names them: a connection
# attempt to a host that does not answer gives up after 2 s (per host of a multi-host URL),
# and an established connection to a host that vanished is dropped within about 10 s
# instead of TCP's quarter of an hour.
PG_CONNECT_DEFAULTS = {
    "connect_timeout": "2",
    "keepalives": "1",
    "keepalives_idle": "5",
    "keepalives_interval": "2",
    "keepalives_count": "3",
    "tcp_user_timeout": "10000",
}

# SQLSTATEs that mean "this server is no longer the primary you want": it shuts down
# (57P01-57P03), or it is a replica now (25006). The pool is emptied, as for a lost
# connection, so the next connection goes to the new primary.
FAILOVER_SQLSTATES = frozenset({"25006", "57P01", "57P02", "57P03"})

# The databases expertline runs on; any other URL is refused before a driver is looked for.
BACKENDS = frozenset({"sqlite", "postgresql"})

_SCHEME = re.compile(r"^(postgres|postgresql)(\+\w+)?://")


def parse_url(url: str) -> URL:
    """A database URL as SQLAlchemy takes it. libpq's multi-host form
    ``postgresql://user@h1:p1,h2:p2/db?...`` (IPv6 as ``[::1]:p``) becomes SQLAlchemy's
    ``?host=h1,h2&port=p1,p2``; with several hosts, ``target_session_attrs`` defaults to
    ``read-write`` (expertline writes: only the primary will do). Raises DatabaseError."""
    try:
        parsed = make_url(_multihost(url) if _SCHEME.match(url) else url)
    except DatabaseError:
        raise
    except Exception as exc:  # sqlalchemy raises ArgumentError or ValueError, with long texts
        raise DatabaseError(f"bad database URL {_masked(url)!r}: {exc}") from exc
    if parsed.get_backend_name() not in BACKENDS:
        raise DatabaseError(
            f"unsupported database {parsed.get_backend_name()!r} in {_masked(url)!r}: "
            "expertline runs on sqlite:///PATH or postgresql://USER@HOST/NAME"
        )
    return parsed


def _multihost(url: str) -> str:
    scheme, _, rest = url.partition("://")
    netloc, slash, tail = rest.partition("/")
    userinfo, at, hostlist = netloc.rpartition("@")
    if "," not in hostlist:
        return url
    path, _, query = tail.partition("?")
    params = [p for p in query.split("&") if p]
    if any(p.split("=", 1)[0] in ("host", "port") for p in params):
        raise DatabaseError(
            "give the database hosts either before the path (h1:p1,h2:p2) or as host= "
            "parameters, not both"
        )
    hosts, ports = [], []
    for entry in hostlist.split(","):
        host, port = _host_port(entry)
        hosts.append(host)
        ports.append(port)
    params.append("host=" + ",".join(hosts))
    if any(ports):
        params.append("port=" + ",".join(ports))
    if not any(p.startswith("target_session_attrs=") for p in params):
        params.append("target_session_attrs=read-write")
    return f"{scheme}://{userinfo}{at}/{path if slash else ''}?{'&'.join(params)}"


def _host_port(entry: str) -> tuple[str, str]:
    entry = entry.strip()
    if entry.startswith("["):  # [v6]:port
        host, _, after = entry[1:].partition("]")
        port = after.removeprefix(":")
    else:
        host, _, port = entry.partition(":")
    if not host or (port and not port.isdigit()):
        raise DatabaseError(f"bad host {entry!r} in the database URL: expected HOST or HOST:PORT")
    return host, port


def _masked(url: str) -> str:
    """The URL without its password, for messages."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


def is_sqlite(url: str) -> bool:
    return parse_url(url).get_backend_name() == "sqlite"


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine with durable settings: SQLite in WAL mode with full fsync on commit;
    PostgreSQL with bounded connection attempts and failover-aware pooling (module doc)."""
    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"timeout": BUSY_TIMEOUT_S}, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 10)
    if parsed.get_backend_name() == "postgresql":
        kwargs["connect_args"] = {**_pg_defaults(parsed), **kwargs.get("connect_args", {})}
    engine = create_engine(parsed, **kwargs)
    if parsed.get_backend_name() == "postgresql":
        link = _Link()
        event.listen(engine, "handle_error", link.on_error)
        event.listen(engine, "connect", link.on_connect)
    return engine


def connect_params(engine: Engine) -> dict[str, Any]:
    """Keyword arguments for ``psycopg.connect`` to the engine's database, with the engine's
    libpq settings: for a dedicated connection outside the pool (LISTEN)."""
    _, params = engine.dialect.create_connect_args(engine.url)
    params.pop("context", None)  # the engine's adapters; a plain connection has its own
    return {**_pg_defaults(engine.url), **params}


def _pg_defaults(url: URL) -> dict[str, str]:
    return {k: v for k, v in PG_CONNECT_DEFAULTS.items() if k not in url.query}


class _Link:
    """The state of an engine's way to the database, said once per change in the log. An
    engine that never connected says nothing: its caller reports that failure."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connected = False
        self._lost_at: float | None = None

    def on_error(self, context: Any) -> None:
        exc = context.original_exception
        if getattr(exc, "sqlstate", None) in FAILOVER_SQLSTATES:
            context.is_disconnect = True
        connecting = context.connection is None and not context.is_pre_ping
        if not (context.is_disconnect or connecting):
            return
        with self._lock:
            if not self._connected or self._lost_at is not None:
                return  # never up, or the same outage: its callers report it
            self._lost_at = time.monotonic()
        log.warning(
            "database %s error=%s; the next use connects again (to the primary, with a "
            "multi-host URL)",
            "unreachable" if connecting else "connection lost, pool emptied",
            _one_line(exc),
        )

    def on_connect(self, dbapi_connection: Any, _record: Any) -> None:
        with self._lock:
            lost_at, self._lost_at, self._connected = self._lost_at, None, True
        if lost_at is None:
            return
        info = getattr(dbapi_connection, "info", None)
        log.info(
            "database connected again host=%s port=%s after=%.1fs",
            getattr(info, "host", "?"),
            getattr(info, "port", "?"),
            time.monotonic() - lost_at,
        )


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    configure(dbapi_connection)


def _sqlite_begin(connection: Any) -> None:
    # ``sqlite_begin="IMMEDIATE"`` (an execution option) takes the write lock at BEGIN: a
    # transaction that reads and then writes (a migration) must not start as a reader, or a
    # commit by another process in between makes its first write fail at once with
    # "database is locked" instead of waiting for the busy timeout.
    mode = connection.get_execution_options().get("sqlite_begin")
    connection.exec_driver_sql("BEGIN IMMEDIATE" if mode == "IMMEDIATE" else "BEGIN")


def as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; they were written as UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)
