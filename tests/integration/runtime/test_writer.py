"""The batch writers: numbered batches commit once and in order, in a thread or a process.

The writer process is real (``python -m expertline.runtime.sqlwrite``) and is killed for
real: a batch whose commit outcome was not seen is retried and lands exactly once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from expertline.db import migrate
from expertline.db.engine import make_engine
from expertline.db.tables import routing_feed, runtime_meta
from expertline.runtime import sqlwrite, store
from expertline.runtime.service import RuntimeService
from expertline.runtime.writer import (
    CommitBehind,
    CommitError,
    CommitRefused,
    ProcessWriter,
    ThreadWriter,
    writer_for,
)
from support.databases import postgres_database, sqlite_url
from support.rows import task_row
from support.wait import async_eventually, eventually


@pytest.fixture()
def db(tmp_path: Path) -> Iterator[tuple[str, Engine]]:
    path = tmp_path / "rt.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    yield str(path), engine
    engine.dispose()


def _batch(seq: int, feed_id: int, task: str = "t1") -> store.Batch:
    batch = store.Batch(seq=seq)
    at = 1_795_000_000.25 + seq
    batch.feed.append(
        {
            "id": feed_id,
            "type": "task.created",
            "task_id": task,
            "expert_id": None,
            "data": {"task_id": task, "n": seq},
            "created_at": at,
        }
    )
    return batch


def _feed_ids(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return [r.id for r in conn.execute(select(routing_feed.c.id).order_by(routing_feed.c.id))]


def _last_batch(engine: Engine) -> int:
    with engine.connect() as conn:
        value = conn.execute(
            select(runtime_meta.c.value).where(runtime_meta.c.key == sqlwrite.BATCH_KEY)
        ).scalar()
    return int(value or 0)


def test_a_file_database_gets_a_process_and_memory_a_thread(db: tuple[str, Engine]) -> None:
    _, engine = db
    assert isinstance(writer_for(engine), ProcessWriter)
    memory = make_engine("sqlite://")
    assert isinstance(writer_for(memory), ThreadWriter)


@pytest.fixture()
async def writer(db: tuple[str, Engine]) -> AsyncIterator[ProcessWriter]:
    """A writer process on the test database, always stopped afterwards."""
    path, _ = db
    writer = ProcessWriter(path)
    try:
        yield writer
    finally:
        await writer.async_stop()


async def test_process_writer_commits_in_order_and_skips_a_batch_written_already(
    db: tuple[str, Engine], writer: ProcessWriter
) -> None:
    _, engine = db
    await writer.async_start()
    # sent before the earlier ones are answered: they may share a transaction
    first = await asyncio.gather(*(writer.async_write(_batch(n, n)) for n in (1, 2, 3)))
    assert first == [True, True, True]
    assert not await writer.async_write(_batch(2, 2))
    assert _feed_ids(engine) == [1, 2, 3]
    assert _last_batch(engine) == 3
    assert store.load_sequences(engine).batch == 3


async def test_a_batch_ahead_of_a_missing_one_is_refused_and_changes_nothing(
    db: tuple[str, Engine], writer: ProcessWriter
) -> None:
    _, engine = db
    with pytest.raises(CommitError, match="batch 2 waits for batch 1"):
        await writer.async_write(_batch(2, 2))
    assert _feed_ids(engine) == []
    assert await writer.async_write(_batch(1, 1))
    assert await writer.async_write(_batch(2, 2))
    assert _feed_ids(engine) == [1, 2]


async def test_a_database_error_rolls_back_the_batch_and_the_retry_lands(
    db: tuple[str, Engine], writer: ProcessWriter
) -> None:
    _, engine = db
    assert await writer.async_write(_batch(1, 1))
    clash = _batch(2, 1)  # feed id 1 exists: the whole batch must roll back
    clash.feed.append({**_batch(2, 2).feed[0]})
    with pytest.raises(CommitError, match="IntegrityError"):
        await writer.async_write(clash)
    assert _last_batch(engine) == 1
    assert await writer.async_write(_batch(2, 2))
    assert _feed_ids(engine) == [1, 2]


async def test_a_killed_writer_process_is_replaced_and_no_batch_is_lost_or_doubled(
    db: tuple[str, Engine], writer: ProcessWriter
) -> None:
    _, engine = db

    async def write(batch: store.Batch) -> bool:
        # what the runtime does: retry the same batch until it lands
        async def attempt() -> bool:
            try:
                await writer.async_write(batch)
            except CommitError:
                return False
            return True

        return await async_eventually(attempt, timeout=20)

    await write(_batch(1, 1))
    child = writer._child
    assert child is not None
    os.kill(child.proc.pid, signal.SIGKILL)
    await write(_batch(2, 2))
    # the outcome of a commit was not seen: the same batch again is harmless
    store.write_batch(engine, _batch(3, 3))
    assert not await writer.async_write(_batch(3, 3))
    await write(_batch(4, 4))
    assert writer.started == 2
    assert _feed_ids(engine) == [1, 2, 3, 4]


@pytest.fixture(params=["sqlite", "postgresql"])
def any_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        engine = make_engine(sqlite_url(tmp_path))
        migrate.upgrade(engine)
        yield engine
        engine.dispose()
        return
    with postgres_database() as url:
        engine = make_engine(url)
        migrate.upgrade(engine)
        yield engine
        engine.dispose()


async def test_the_thread_writer_keeps_the_same_rules(any_engine: Engine) -> None:
    writer = ThreadWriter(any_engine)
    assert await writer.async_write(_batch(1, 1))
    assert not await writer.async_write(_batch(1, 1))
    with pytest.raises(CommitError, match="batch 3 waits for batch 2"):
        await writer.async_write(_batch(3, 3))
    assert _feed_ids(any_engine) == [1]


def test_the_writer_process_dies_with_its_node(db: tuple[str, Engine]) -> None:
    """A node killed with SIGKILL takes its writer with it: nothing commits after it."""
    path, _ = db
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        from expertline.runtime.writer import ProcessWriter

        async def main():
            writer = ProcessWriter({path!r})
            await writer.async_start()
            print(writer._child.proc.pid, flush=True)
            await asyncio.sleep(3600)

        asyncio.run(main())
        """
    )
    node = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert node.stdout is not None
        child = int(node.stdout.readline())
        assert _alive(child)
        node.kill()
        node.wait(timeout=10)
        eventually(lambda: not _alive(child), timeout=10)
    finally:
        if node.poll() is None:
            node.kill()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


async def test_rows_carry_times_as_seconds_and_read_back_as_datetimes(
    db: tuple[str, Engine], writer: ProcessWriter
) -> None:
    _, engine = db
    assert await writer.async_write(_batch(1, 1))
    with engine.connect() as conn:
        created = conn.execute(select(routing_feed.c.created_at)).scalar()
        count = conn.execute(select(func.count()).select_from(routing_feed)).scalar()
    assert count == 1
    assert store.as_utc(created).timestamp() == pytest.approx(1_795_000_001.25)


def test_the_writer_process_imports_no_sqlalchemy() -> None:
    """It starts with each node and after each death: it must stay light to start."""
    probe = (
        "import sys, expertline.runtime.sqlwrite; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sqlalchemy', 'fastapi')))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


async def test_a_start_that_fails_leaves_no_writer_process(db: tuple[str, Engine]) -> None:
    _, engine = db

    def broken(_engine: Engine) -> Any:
        raise RuntimeError("configuration unreadable")

    service = RuntimeService(engine, config_loader=broken)
    writer = service.writer
    assert isinstance(writer, ProcessWriter)
    with pytest.raises(RuntimeError, match="configuration unreadable"):
        await service.async_start()
    assert writer.started == 1  # it had started, and was stopped again
    assert writer._child is None


async def test_the_process_writer_says_refused_behind_or_failed(
    db: tuple[str, Engine], writer: ProcessWriter
) -> None:
    _, engine = db
    assert await writer.async_write(_batch(1, 1))
    with pytest.raises(CommitRefused) as refused:
        await writer.async_write(_batch(2, 1))  # feed id 1 exists
    assert refused.value.reason == "UNIQUE constraint failed: routing_feed.id"
    assert refused.value.kind == "IntegrityError"
    with pytest.raises(CommitBehind):
        await writer.async_write(_batch(3, 3))
    assert _feed_ids(engine) == [1]


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ({"state": {"score": float("nan")}}, "invalid input syntax for type json"),
        (
            {"callback_url": "http://x/\x00"},
            "PostgreSQL text fields cannot contain NUL (0x00) bytes",
        ),
        ({"external_id": "x" * 300}, "value too long for type character varying(255)"),
    ],
)
async def test_postgresql_refusals_are_told_apart_from_outages(
    values: dict[str, Any], reason: str
) -> None:
    with postgres_database() as url:
        engine = make_engine(url)
        migrate.upgrade(engine)
        writer = ThreadWriter(engine)
        batch = store.Batch(seq=1)
        batch.tasks["t1"] = task_row(**values)
        with pytest.raises(CommitRefused) as refused:
            await writer.async_write(batch)
        assert refused.value.reason == reason  # one line: no SQL, no row values
        assert await writer.async_write(_batch(1, 1))  # the same number, other rows: it lands
        engine.dispose()
