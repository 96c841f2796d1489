"""Writing the runtime's batches into SQLite, with no SQLAlchemy: in a thread or a process.

A batch reaches this module as plain data (``Writes``): rows per table in statement order,
deletes, and the batch's sequence number. ``SqliteBatchWriter`` turns the rows into a few
multi-row ``INSERT ... VALUES`` statements of power-of-two sizes (all kept in the driver's
statement cache), so SQLite works in a few long steps, and writes them in one transaction
together with the batch's sequence number. A batch whose number is already in the database
is not written again: a commit whose outcome was not seen (the writer process died, the
driver raised after ``COMMIT``) can be retried safely.

Run as ``python -m expertline.runtime.sqlwrite``, this module is the runtime's writer
process: it reads batches on stdin and answers on stdout (length-prefixed pickles), so that
SQLite's work and the conversion of rows to SQL values run on another core, outside the
event loop's interpreter lock. It imports only the standard library, orjson,
``db/sqlite.py`` and ``runtime/refusal.py``, and dies with the process that started it.
"""

from __future__ import annotations

import gc
import os
import pickle
import select
import sqlite3
import struct
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

from expertline.db.sqlite import BUSY_TIMEOUT_S, configure, json_text, sqlite_time
from expertline.runtime.refusal import error_kind, refusal

# Column kinds: how a row value becomes an SQLite value (as SQLAlchemy's types store it).
PLAIN, JSON, TIME, FLAG = "plain", "json", "time", "flag"

META_TABLE = "runtime_meta"
BATCH_KEY = "batch"  # runtime_meta key holding the sequence number of the last batch written
MAX_PARAMS = 32766  # SQLITE_MAX_VARIABLE_NUMBER's default since SQLite 3.32


@dataclass(frozen=True)
class TablePlan:
    """A table as this writer needs it: column names and kinds, in table order."""

    name: str
    columns: tuple[str, ...]
    kinds: tuple[str, ...]


@dataclass
class Writes:
    """One transaction: upserts/inserts ``(table, key or None, rows)`` in order, then deletes
    ``(table, column, values)``; ``seq`` numbers the batch (None: not numbered)."""

    seq: int | None
    rows: list[tuple[str, str | None, list[dict[str, Any]]]]
    deletes: list[tuple[str, str, list[Any]]]


class OutOfOrder(Exception):
    """A batch arrived before the one it follows was written; it is retried later."""


def due(seq: int | None, last: int) -> bool:
    """Whether batch ``seq`` is to be written now that ``last`` is the last one written:
    False when it was written already, ``OutOfOrder`` when an earlier one is missing. Both
    writers (SQLite here, PostgreSQL in ``store``) apply this one rule."""
    if seq is None:
        return True
    if seq <= last:
        return False
    if seq != last + 1:
        raise OutOfOrder(f"batch {seq} waits for batch {last + 1}")
    return True


_RowFunction = Callable[[dict[str, Any], dict[Any, str]], tuple[Any, ...]]


def _time_text(value: Any) -> Any:
    return None if value is None else sqlite_time(value)


def _flag(value: Any) -> Any:
    return int(value) if isinstance(value, bool) else value


class SqliteBatchWriter:
    """Builds and runs the statements of ``Writes`` on a DB-API ``sqlite3`` connection."""

    def __init__(self, plans: Sequence[TablePlan]) -> None:
        self._plans = {p.name: p for p in plans}
        self._convert: dict[str, _RowFunction] = {}
        self._sql: dict[tuple[str, str, int], str] = {}

    def statements(self, writes: Writes) -> list[tuple[str, list[Any]]]:
        """The statements of one transaction (built before it: it holds the write lock)."""
        out: list[tuple[str, list[Any]]] = []
        times: dict[Any, str] = {}  # a batch shares a handful of timestamps
        for table, key, rows in writes.rows:
            if rows:
                self._inserts(out, times, self._plans[table], rows, key)
        for table, column, values in writes.deletes:
            for start in range(0, len(values), 1000):
                chunk = values[start : start + 1000]
                marks = ", ".join("?" * len(chunk))
                out.append((f"DELETE FROM {table} WHERE {column} IN ({marks})", list(chunk)))
        if writes.seq is not None:
            meta = [{"key": BATCH_KEY, "value": writes.seq}]
            self._inserts(out, times, self._plans[META_TABLE], meta, "key")
        return out

    @staticmethod
    def write(
        cursor: Any, writes: Writes, statements: list[tuple[str, list[Any]]], last: int
    ) -> bool:
        """Run ``statements`` inside the caller's transaction, where ``last`` is the number
        of the last batch written. False when ``writes.seq`` was written already (nothing is
        done then); ``OutOfOrder`` when an earlier batch is still missing."""
        if not due(writes.seq, last):
            return False
        for sql, params in statements:
            cursor.execute(sql, params)
        return True

    def _inserts(
        self,
        out: list[tuple[str, list[Any]]],
        times: dict[Any, str],
        plan: TablePlan,
        rows: list[dict[str, Any]],
        key: str | None,
    ) -> None:
        convert = self._row_function(plan)
        width = len(plan.columns)
        params = [value for row in rows for value in convert(row, times)]
        largest = 1 << ((MAX_PARAMS // width).bit_length() - 1)  # rows per statement
        done, total = 0, len(rows)
        while done < total:
            n = min(largest, 1 << ((total - done).bit_length() - 1))
            out.append((self._insert_sql(plan, key, n), params[done * width : (done + n) * width]))
            done += n

    def _row_function(self, plan: TablePlan) -> _RowFunction:
        """A function turning one row dict into the driver's parameters for ``plan``."""
        cached = self._convert.get(plan.name)
        if cached is not None:
            return cached
        parts: list[str] = []
        for column, kind in zip(plan.columns, plan.kinds, strict=True):
            get = f"row.get({column!r})"
            if kind == JSON:
                parts.append(f"json_text({get})")
            elif kind == TIME:
                parts.append(f"(dt[v] if (v := {get}) in dt else dt.setdefault(v, dt_text(v)))")
            elif kind == FLAG:
                parts.append(f"flag({get})")
            else:
                parts.append(get)
        source = "def convert(row, dt):\n    return (" + ", ".join(parts) + ",)\n"
        scope: dict[str, Any] = {"json_text": json_text, "dt_text": _time_text, "flag": _flag}
        exec(source, scope)
        convert: _RowFunction = scope["convert"]
        self._convert[plan.name] = convert
        return convert

    def _insert_sql(self, plan: TablePlan, key: str | None, rows: int) -> str:
        """``INSERT`` of ``rows`` rows (an upsert on ``key`` when given)."""
        cached = self._sql.get((plan.name, key or "", rows))
        if cached is not None:
            return cached
        one = "(" + ", ".join("?" * len(plan.columns)) + ")"
        sql = f"INSERT INTO {plan.name} ({', '.join(plan.columns)}) VALUES " + ", ".join(
            [one] * rows
        )
        if key is not None:
            sql += f" ON CONFLICT({key}) DO UPDATE SET " + ", ".join(
                f"{c} = excluded.{c}" for c in plan.columns if c != key
            )
        self._sql[(plan.name, key or "", rows)] = sql
        return sql


def committed_seq(cursor: Any) -> int:
    """The sequence number of the last batch written (0: none yet)."""
    row = cursor.execute(f"SELECT value FROM {META_TABLE} WHERE key = ?", (BATCH_KEY,)).fetchone()
    return int(row[0]) if row else 0


# --- the writer process ------------------------------------------------------------------------

FRAME_LENGTH = struct.Struct(">I")  # a frame: this length, then a pickle
_CHUNK = 1 << 20


def frame(value: Any) -> bytes:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return FRAME_LENGTH.pack(len(data)) + data


class FrameReader:
    """Length-prefixed pickles from a file descriptor, with a look at what is already there."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buf = bytearray()
        self.closed = False

    def _complete(self) -> Any:
        if len(self._buf) < FRAME_LENGTH.size:
            return None
        (size,) = FRAME_LENGTH.unpack_from(self._buf)
        end = FRAME_LENGTH.size + size
        if len(self._buf) < end:
            return None
        value = pickle.loads(memoryview(self._buf)[FRAME_LENGTH.size : end])
        del self._buf[:end]
        return value

    def _fill(self, block: bool) -> None:
        if not block and not select.select([self._fd], [], [], 0)[0]:
            return
        data = os.read(self._fd, _CHUNK)
        if data:
            self._buf += data
        else:
            self.closed = True

    def next(self) -> Any:
        """The next value, waiting for it; None at the end of the input."""
        while (value := self._complete()) is None:
            if self.closed:
                return None
            self._fill(block=True)
        return value

    def ready(self) -> list[Any]:
        """Every value already sent, without waiting."""
        out: list[Any] = []
        while True:
            value = self._complete()
            if value is None:
                if self.closed:
                    return out
                before = len(self._buf)
                self._fill(block=False)
                if len(self._buf) == before:
                    return out
                continue
            out.append(value)


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to kill this process when its parent dies, so a writer never commits after
    its node is gone (and a restarted node can trust what it reads). Elsewhere the end of
    stdin stops the loop after the batch in hand."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        sys.exit(0)


def commit_group(
    conn: sqlite3.Connection, writer: SqliteBatchWriter, group: list[Writes]
) -> list[tuple[str, Any]]:
    """Write batches that arrived together in one transaction (one fsync): group commit.

    They succeed or fail together; each gets its answer: ``("ok", written)``, or a failure
    the runtime handles by its kind (``failure``). When the database refused the data of a
    group of several, they are written again one by one, so that the batches before the
    refused one commit and only that one is answered ``refused`` (those after it are then
    ``behind``)."""
    answers = _commit_together(conn, writer, group)
    if len(group) > 1 and answers[0][0] == "refused":
        return [_commit_together(conn, writer, [writes])[0] for writes in group]
    return answers


def failure(exc: BaseException) -> tuple[str, Any]:
    """The answer to a batch that did not commit: ``("behind", text)`` when an earlier batch
    is missing, ``("refused", (error class, reason))`` when the database refused its data
    (``refusal.refusal``), ``("error", text)`` otherwise (retried as is)."""
    if isinstance(exc, OutOfOrder):
        return ("behind", str(exc))
    reason = refusal(exc)
    if reason is not None:
        return ("refused", (error_kind(exc), reason))
    return ("error", f"{type(exc).__name__}: {exc}")


def _commit_together(
    conn: sqlite3.Connection, writer: SqliteBatchWriter, group: list[Writes]
) -> list[tuple[str, Any]]:
    cursor = conn.cursor()
    try:
        statements = [writer.statements(w) for w in group]
        cursor.execute("BEGIN IMMEDIATE")
        try:
            last = committed_seq(cursor)
            written = []
            for writes, stmts in zip(group, statements, strict=True):
                written.append(SqliteBatchWriter.write(cursor, writes, stmts, last))
                if writes.seq is not None:
                    last = max(last, writes.seq)
            cursor.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                cursor.execute("ROLLBACK")
            raise
    except Exception as exc:
        return [failure(exc)] * len(group)
    finally:
        cursor.close()
    return [("ok", w) for w in written]


def serve(source: int, sink: BinaryIO) -> int:
    """The writer process's loop: a greeting, then one answer per batch, until end of input.

    Greeting in: ``{"database", "plans", "parent_pid"}``; out: ``("ready", last batch)``.
    Batches in: ``Writes``; out: one answer per batch, in order (``commit_group``).

    One thread does it all. A second one, preparing batches while the first writes, was
    slower: the writing thread gives the interpreter lock up around each SQLite step and
    then waits for the preparing one to let it go (up to the switch interval) every time."""
    # Everything here is acyclic (rows, tuples, text): reference counting frees it, and the
    # cyclic collector would only walk each batch's many small objects again.
    gc.disable()
    reader = FrameReader(source)
    hello = reader.next()
    if hello is None:
        return 0
    _die_with_parent(int(hello["parent_pid"]))
    conn = sqlite3.connect(hello["database"], timeout=BUSY_TIMEOUT_S, check_same_thread=False)
    configure(conn)
    writer = SqliteBatchWriter([TablePlan(*p) for p in hello["plans"]])
    sink.write(frame(("ready", committed_seq(conn.cursor()))))
    sink.flush()
    while (first := reader.next()) is not None:
        group = [first, *reader.ready()]
        sink.write(b"".join(frame(answer) for answer in commit_group(conn, writer, group)))
        sink.flush()
    conn.close()
    return 0


def main() -> int:
    # Answers go on a private copy of stdout; anything printed goes to stderr instead.
    sink = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    return serve(sys.stdin.fileno(), sink)


if __name__ == "__main__":
    sys.exit(main())
