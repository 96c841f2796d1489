"""Why a commit failed: the database refused the data, or it could not be reached.

A batch that failed because the database is unreachable, busy or out of resources (connection
refused or lost, timeouts, a locked SQLite file, a full disk) lands when it is tried again, so
the runtime retries it. A batch the database *refused* (a constraint, a value it cannot store:
NaN in JSON, NUL in text, text wider than its column, a row its driver cannot encode) is
refused again however often it is tried; the runtime must not retry it as is
(``runtime/replay.py``).

Used by the thread writer and inside the SQLite writer process, so it imports only the
standard library: drivers are recognised by the DB-API 2 (PEP 249) names of their exception
classes, PostgreSQL errors by their SQLSTATE.
"""

from __future__ import annotations

import re
import sqlite3

# SQLSTATE classes and codes that mean "this data", not "this connection" or "this moment".
REFUSED_SQLSTATE_CLASSES = frozenset({"22", "23"})  # data exception, integrity violation
REFUSED_SQLSTATES = frozenset({"42804", "54000"})  # datatype mismatch, program limit exceeded
# SQLite result codes of the same kind (``sqlite3.Error.sqlite_errorname``).
REFUSED_SQLITE = ("SQLITE_CONSTRAINT", "SQLITE_TOOBIG", "SQLITE_MISMATCH", "SQLITE_RANGE")

MAX_REASON = 200
_VALUE_TAIL = re.compile(r""":\s*["'].*$""")  # ': "the value"' that some messages end with


def refusal(exc: BaseException) -> str | None:
    """One line saying what the database refused (no SQL, no row values), or None when the
    failure says nothing against the data and the same batch may land later."""
    cause = getattr(exc, "orig", None)  # SQLAlchemy wraps the driver's exception
    if isinstance(cause, BaseException):
        exc = cause
    if isinstance(exc, UnicodeEncodeError):  # its text would show the character
        return f"text that is not valid Unicode ({exc.reason})"
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate:  # a PostgreSQL server error
        if sqlstate[:2] in REFUSED_SQLSTATE_CLASSES or sqlstate in REFUSED_SQLSTATES:
            return reason_line(exc)
        return None
    if isinstance(exc, sqlite3.Error):
        name = getattr(exc, "sqlite_errorname", "") or ""
        if name.startswith(REFUSED_SQLITE) or isinstance(
            exc, sqlite3.IntegrityError | sqlite3.DataError
        ):
            return reason_line(exc)
        if isinstance(exc, sqlite3.ProgrammingError) and "binding parameter" in str(exc):
            return reason_line(exc)  # a row value the driver cannot store
        return None
    names = {cls.__name__ for cls in type(exc).__mro__}
    if "DatabaseError" in names or "InterfaceError" in names:
        # A driver's error raised before the server saw the statement (psycopg refusing NUL
        # in text, or a value it cannot adapt); anything else is about the connection.
        if "DataError" in names or "IntegrityError" in names or "cannot adapt" in str(exc):
            return reason_line(exc)
        return None
    if isinstance(exc, TypeError | ValueError | OverflowError):
        return f"a value that cannot be stored ({reason_line(exc)})"  # JSON or driver encoding
    return None


def reason_line(exc: BaseException) -> str:
    """The first line of the database's own message, without a quoted value at its end."""
    diag = getattr(exc, "diag", None)
    text = getattr(diag, "message_primary", None) or str(exc)
    lines = text.strip().splitlines()
    line = _VALUE_TAIL.sub("", lines[0]).strip() if lines else ""
    return (line or type(exc).__name__)[:MAX_REASON]


def error_kind(exc: BaseException) -> str:
    """The name of the driver's exception class (``IntegrityError``, ``DataError``...)."""
    cause = getattr(exc, "orig", None)
    return type(cause if isinstance(cause, BaseException) else exc).__name__
