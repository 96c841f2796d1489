"""The runtime's batch writers: where a closed batch is committed while the loop goes on.

``ProcessWriter`` (SQLite files) hands each batch to a child process running
``runtime/sqlwrite.py``: SQLite's work and the conversion of rows to SQL values then run on
another core, outside the event loop's interpreter lock; only pickling the rows stays on the
loop. ``ThreadWriter`` (PostgreSQL, in-memory SQLite) commits in a worker thread; its driver
waits on the network with the lock released.

Both commit batches in the order they are given (the process writer takes the next ones
before answering the first) and raise ``CommitError`` when a batch did not commit, or, on
PostgreSQL, ``Fenced`` when another node holds the HA lease (never retried). A failure says
which kind it is (``runtime/refusal.py``): ``CommitRefused`` when the database refused the
batch's data (retrying it as is cannot help), ``CommitBehind`` when an earlier batch is not
written yet, a plain ``CommitError`` when the database could not be reached or was busy. A retry
of the same batch is always safe: every transaction records its batch number, a batch
already written is skipped and one ahead of a missing one is refused
(``store.write_batch``, ``sqlwrite.SqliteBatchWriter.write``), which covers the case where
the outcome was not seen (the writer process died mid-commit).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import pickle
import sys
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import Engine

from expertline.ha.lease import Fenced
from expertline.runtime import sqlwrite, store
from expertline.runtime.refusal import error_kind, refusal

log = logging.getLogger("expertline.runtime")

START_TIMEOUT_S = 30.0  # the writer process imports, opens the database, answers
COMMIT_TIMEOUT_S = 120.0  # beyond SQLite's own 30 s wait for a lock: the writer is stuck
STOP_TIMEOUT_S = 10.0


class CommitError(Exception):
    """A batch did not commit (it may be retried as is)."""


class CommitBehind(CommitError):
    """A batch arrived before the one it follows was written: it waits for that one."""


class CommitRefused(CommitError):
    """The database refused the batch's data: the same batch would be refused again.

    ``reason`` is one line naming what was refused, with no SQL and no row values (it may be
    told to a caller); ``kind`` the driver's exception class."""

    def __init__(self, reason: str, kind: str = "refused") -> None:
        super().__init__(f"{kind}: {reason}")
        self.reason = reason
        self.kind = kind


class BatchWriter(Protocol):
    name: str
    batch_ops: int  # operations the runtime puts in one batch, at most

    async def async_start(self) -> None: ...

    async def async_write(self, batch: store.Batch) -> bool:
        """Commit ``batch``; False when it had been written already. Raises CommitError."""
        ...

    async def async_stop(self) -> None: ...


class ThreadWriter:
    """Commits with ``store.write_batch`` in a worker thread."""

    name = "thread"
    batch_ops = 2000  # one transaction per batch: batches as large as the load makes them

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._lock = asyncio.Lock()  # one commit at a time, in call order (the lock is fair)

    async def async_start(self) -> None:
        return None

    async def async_write(self, batch: store.Batch) -> bool:
        try:
            async with self._lock:
                return await asyncio.to_thread(store.write_batch, self._engine, batch)
        except Fenced:
            raise  # not a database fault: this node must stop, not retry
        except sqlwrite.OutOfOrder as exc:
            raise CommitBehind(str(exc)) from exc
        except Exception as exc:
            reason = refusal(exc)
            if reason is not None:
                raise CommitRefused(reason, error_kind(exc)) from exc
            raise CommitError(f"{type(exc).__name__}: {exc}") from exc

    async def async_stop(self) -> None:
        return None


@dataclass
class _Child:
    """A running writer process and the batches waiting for its answers, oldest first."""

    proc: asyncio.subprocess.Process
    answers: collections.deque[asyncio.Future[tuple[str, Any]]] = field(
        default_factory=collections.deque
    )
    reader: asyncio.Task[None] | None = None

    def alive(self) -> bool:
        return self.proc.returncode is None and self.reader is not None and not self.reader.done()


class ProcessWriter:
    """Commits in a child process (``python -m expertline.runtime.sqlwrite``) that owns one
    SQLite connection. Batches are sent as soon as they close, before earlier ones are
    answered; the child writes those that arrived together in one transaction (group
    commit) and answers each in order. The child is started again on demand after it dies."""

    name = "process"
    batch_ops = 2000

    def __init__(self, database: str) -> None:
        self._database = database
        self._child: _Child | None = None
        self._lock = asyncio.Lock()  # starting a child
        self.started = 0  # child processes started (restarts show here)

    async def async_start(self) -> None:
        await self._ensure()

    async def async_write(self, batch: store.Batch) -> bool:
        # Pickled on the loop: plain rows pickle in C, far faster than SQLite's work and the
        # conversion to SQL values, which run in the child.
        data = sqlwrite.frame(store.writes(batch))
        child = await self._ensure()
        answer: asyncio.Future[tuple[str, Any]] = asyncio.get_running_loop().create_future()
        child.answers.append(answer)
        try:
            assert child.proc.stdin is not None
            child.proc.stdin.write(data)  # whole frames, in call order: no interleaving
            await child.proc.stdin.drain()
            kind, value = await asyncio.wait_for(asyncio.shield(answer), COMMIT_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            await self._discard(child, f"no answer to a commit: {type(exc).__name__}")
            raise CommitError("the writer process stopped during a commit") from exc
        if kind == "refused":
            error_class, reason = value
            raise CommitRefused(reason, error_class)
        if kind == "behind":
            raise CommitBehind(str(value))
        if kind != "ok":
            raise CommitError(str(value))
        return bool(value)

    async def async_stop(self) -> None:
        async with self._lock:
            child, self._child = self._child, None
            if child is None:
                return
            proc = child.proc
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                log.warning("writer process did not stop; killing it pid=%d", proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
            if child.reader is not None:
                await child.reader

    async def _ensure(self) -> _Child:
        async with self._lock:
            child = self._child
            if child is not None and child.alive():
                return child
            if child is not None:
                await self._discard(child, f"exited code={child.proc.returncode}")
            child = _Child(await self._spawn())
            child.reader = asyncio.create_task(self._read_answers(child), name="writer-answers")
            self._child = child
            return child

    async def _spawn(self) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "expertline.runtime.sqlwrite",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdin is not None and proc.stdout is not None
        hello = {
            "database": self._database,
            "plans": [tuple(vars(p).values()) for p in store.table_plans()],
            "parent_pid": os.getpid(),
        }
        try:
            proc.stdin.write(sqlwrite.frame(hello))
            await proc.stdin.drain()
            kind, last = await asyncio.wait_for(_read(proc.stdout), START_TIMEOUT_S)
            if kind != "ready":
                raise EOFError(f"answered {kind!r} to its greeting")
        except (OSError, EOFError, asyncio.IncompleteReadError, TimeoutError) as exc:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise CommitError(f"the writer process did not start: {exc!r}") from exc
        self.started += 1
        log.info("writer process started pid=%d last_batch=%d", proc.pid, last)
        return proc

    @staticmethod
    async def _read_answers(child: _Child) -> None:
        """Hand each answer to the oldest waiting batch; when the child is gone, fail the
        rest (their outcome is unknown: the retry finds out, by batch number)."""
        stdout = child.proc.stdout
        assert stdout is not None
        try:
            while True:
                answer = await _read(stdout)
                fut = child.answers.popleft()
                if not fut.done():
                    fut.set_result(answer)
        except (OSError, EOFError, IndexError, asyncio.IncompleteReadError):
            pass
        finally:
            while child.answers:
                fut = child.answers.popleft()
                if not fut.done():
                    fut.set_result(("error", "the writer process stopped during a commit"))

    async def _discard(self, child: _Child, why: str) -> None:
        if self._child is child:
            self._child = None
        proc = child.proc
        if proc.returncode is None:
            log.warning("writer process discarded pid=%d reason=%s", proc.pid, why)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)


async def _read(stream: asyncio.StreamReader) -> Any:
    length = sqlwrite.FRAME_LENGTH
    (size,) = length.unpack(await stream.readexactly(length.size))
    return pickle.loads(await stream.readexactly(size))


def writer_for(engine: Engine) -> BatchWriter:
    """A process for a SQLite file, a thread otherwise."""
    url = engine.url
    database = url.database
    if url.get_backend_name() == "sqlite" and database and database != ":memory:":
        return ProcessWriter(os.path.abspath(database))
    return ThreadWriter(engine)
