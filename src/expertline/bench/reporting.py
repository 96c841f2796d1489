"""``expertline bench reporting``: ingestion rate and the 30-day queue report at volume.

Sections (``--only``):

- ``ingest``: two catch-ups through the real ``Ingester`` (batches of 2,000 feed rows, one
  transaction each): a short one of ``5,000 x scale`` task records and the long one of
  ``50,000 x scale`` (what reporting finds after being stopped for a while). Each task record
  has two offers and distinct millisecond timestamps, written the way the runtime writes them;
  one expert state change follows every two tasks. The long catch-up carries the target,
  >= 5,000 tasks/s; its first and last tenths of batches are timed too, to show whether a
  batch gets slower as the reporting tables grow.
- ``report``: the queue report over 30 days with ``1 M x scale`` and ``10 M x scale`` ended
  tasks: the rows are generated inside the database (recursive CTE / generate_series: far
  faster than shipping them), the 15-minute figures are computed from them by SQL, and then
  the report is timed both ways: from the maintained 15-minute figures (what the product does)
  and recomputed from task rows by SQL (the alternative). Target: <= 1 s on PostgreSQL at 10 M.

Runs on a temporary SQLite file and, when the local server answers, a temporary PostgreSQL
database (created and dropped here); ``--bench-db URL`` runs on that database only: it is
migrated, and its routing feed, configuration history and reporting tables are emptied (a
throwaway database only).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from expertline.bench.common import BenchOptions, BenchResult, Stopwatch, current_rss_mb
from expertline.db import migrate
from expertline.db.engine import make_engine
from expertline.instants import iso
from expertline.records.feed import EXPERT_STATE, TASK_RECORD
from expertline.reporting import migrate as reporting_migrate
from expertline.reporting.ingest import Ingester
from expertline.reporting.reports import parse_range, queue_report

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
START = datetime(2026, 1, 1, tzinfo=UTC)
DAYS = 30
QUEUES = 8
INGEST_TASKS = (5_000, 50_000)  # a short catch-up, then the long one that carries the target
BATCH = 2000
SECTIONS = ("ingest", "report")
REPORT_SIZES = (1_000_000, 10_000_000)


def run(options: BenchOptions) -> BenchResult:
    result = BenchResult("reporting")
    options.check_sections(list(SECTIONS))
    logging.getLogger("expertline.reporting").setLevel(logging.WARNING)
    for backend, engine_cm in _backends(options, result):
        with engine_cm as engine:
            if options.selected("ingest"):
                short, long = (max(1000, int(n * options.scale)) for n in INGEST_TASKS)
                _ingestion(engine, backend, short, None, result)
                _ingestion(engine, backend, long, ">= 5000", result)
            if options.selected("report"):
                for size in REPORT_SIZES:
                    n = max(1000, int(size * options.scale))
                    _report_at_volume(engine, backend, n, result)
    if options.selected("report"):
        result.notes.append(
            "queue report = 30 days x 8 queues from the maintained 15-minute figures; "
            "'by SQL from tasks' = the same figures recomputed from report_tasks at query time"
        )
    load = os.getloadavg()[0]
    result.notes.append(f"load average at the end: {load:.1f} on {os.cpu_count()} cpus")
    return result


# --- databases -----------------------------------------------------------------------------


def _backends(
    options: BenchOptions, result: BenchResult
) -> Iterator[tuple[str, contextlib.AbstractContextManager[Engine]]]:
    if options.db:
        backend = make_url(options.db).get_backend_name()
        yield backend, _given(options.db)
        return
    yield "sqlite", _temp_sqlite()
    if _pg_up():
        yield "postgresql", _temp_postgres()
    else:
        result.notes.append(f"PostgreSQL not reachable at {PG_ADMIN}: measured SQLite only")


@contextlib.contextmanager
def _given(url: str) -> Iterator[Engine]:
    engine = make_engine(url)
    try:
        migrate.upgrade(engine)
        reporting_migrate.upgrade(engine)
        yield engine
    finally:
        engine.dispose()


@contextlib.contextmanager
def _temp_sqlite() -> Iterator[Engine]:
    with (
        tempfile.TemporaryDirectory(prefix="expertline-bench-") as tmp,
        _given(f"sqlite:///{Path(tmp) / 'bench.db'}") as engine,
    ):
        yield engine


def _pg_up() -> bool:
    try:
        eng = create_engine(PG_ADMIN)
        with eng.connect() as conn:
            conn.execute(text("select 1"))
        eng.dispose()
        return True
    except Exception:
        return False


@contextlib.contextmanager
def _temp_postgres() -> Iterator[Engine]:
    name = f"expertline_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False)
    try:
        with _given(url) as engine:
            yield engine
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _reset(engine: Engine) -> None:
    with engine.begin() as conn:
        for t in (
            "report_tasks",
            "report_offers",
            "report_attempts",
            "report_expert_states",
            "report_queue_intervals",
            "report_config_history",
            "report_cursors",
            "routing_feed",
            "config_changes",
            "config_versions",
        ):
            conn.execute(text(f"DELETE FROM {t}"))


# --- 1. ingestion --------------------------------------------------------------------------


def _record(i: int) -> dict[str, Any]:
    """Task ``i``'s record as the runtime writes it: millisecond UTC times, each distinct."""
    created = START.timestamp() + i * 3 + 0.125
    wait = float(i % 45)
    status = "completed" if i % 10 < 8 else "abandoned"
    expert = f"e{i % 50}" if status == "completed" else None
    first_end = created + min(wait, 20.0) + 0.011
    assigned = created + wait + 0.017
    connected = assigned + 2.3
    ended = connected + 120.0 if expert else assigned
    return {
        "task_id": f"b{i}",
        "code": str(1000 + i % 9000),
        "external_id": None,
        "channel": "voice",
        "queue_id": f"q{i % QUEUES}",
        "queues": [f"q{i % QUEUES}"],
        "status": status,
        "call_disposition": 13 if status == "completed" else 2,
        "expert_id": expert,
        "caller": "+15550000000",
        "dialed_number": "+18005550100",
        "created_at": iso(created),
        "assigned_at": iso(assigned) if expert else None,
        "connected_at": iso(connected) if expert else None,
        "ended_at": iso(ended),
        "wait": wait,
        "ring_time": 2.3 if expert else 0.0,
        "talk_time": 120.0 if expert else 0.0,
        "work_time": 10.0 if expert else 0.0,
        "config_version": 1,
        "node": "bench",
        "offers": [
            {
                "offer_id": f"b{i}-1",
                "expert_id": f"e{(i + 1) % 50}",
                "queue_id": f"q{i % QUEUES}",
                "created_at": iso(created + 0.004),
                "ended_at": iso(first_end),
                "outcome": "timeout",
            },
            {
                "offer_id": f"b{i}-2",
                "expert_id": f"e{i % 50}",
                "queue_id": f"q{i % QUEUES}",
                "created_at": iso(first_end + 0.003),
                "ended_at": iso(assigned if expert else ended),
                "outcome": "accepted" if expert else "withdrawn",
            },
        ],
        "attempts": [],
    }


def _feed_rows(n: int) -> Iterator[tuple[int, str, str | None, str | None, str, datetime]]:
    fid = 0
    now = datetime.now(UTC)
    for i in range(n):
        rec = _record(i)
        fid += 1
        yield fid, TASK_RECORD, rec["task_id"], None, json.dumps(rec), now
        if i % 2 == 0:
            fid += 1
            expert = f"e{i % 50}"
            state = {
                "config_version": 1,
                "expert_id": expert,
                "state": "busy" if i % 4 == 0 else "available",
                "previous": None,
                "at": iso(START.timestamp() + i * 3 + 1.5),
            }
            yield fid, EXPERT_STATE, None, expert, json.dumps(state), now


def _write_feed(engine: Engine, n: int) -> None:
    rows = _feed_rows(n)
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        if engine.dialect.name == "postgresql":
            with cur.copy(
                "COPY routing_feed (id, type, task_id, expert_id, data, created_at) FROM STDIN"
            ) as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            cur.execute("BEGIN")
            cur.executemany(
                "INSERT INTO routing_feed (id, type, task_id, expert_id, data, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(a, b, c, d, e, f.strftime("%Y-%m-%d %H:%M:%S.%f")) for a, b, c, d, e, f in rows],
            )
        raw.commit()
    finally:
        raw.close()


def _config(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO config_versions (version, applied_at, actor, source, summary) "
                "VALUES (1, :at, 'bench', 'bench', 'bench')"
            ),
            {"at": START - timedelta(days=1)},
        )
        for q in range(QUEUES):
            body = json.dumps({"id": f"q{q}", "name": f"Queue {q}", "service_level": "20s"})
            conn.execute(
                text(
                    'INSERT INTO config_changes (version, kind, object_id, op, "after") '
                    "VALUES (1, 'queue', :id, 'add', :body)"
                ),
                {"id": f"q{q}", "body": body},
            )


def _ingestion(
    engine: Engine, backend: str, n: int, target: str | None, result: BenchResult
) -> None:
    _reset(engine)
    _config(engine)
    sw = Stopwatch()
    _write_feed(engine, n)
    write_s = sw.seconds()
    ingester = Ingester(engine, engine, batch_size=BATCH)
    batches: list[float] = []
    sw = Stopwatch()
    while True:
        started = time.perf_counter()
        done = ingester.run_once()
        batches.append(time.perf_counter() - started)
        if done.read < BATCH:
            break
    seconds = sw.seconds()
    kind = "long" if target else "short"
    ctx = f"{backend}, {n:,} tasks + {(n + 1) // 2:,} state changes, batches of {BATCH:,}"
    result.add(f"ingestion rate, {kind} catch-up", n / seconds, "tasks/s", target, ctx)
    if target:
        full = batches[:-1] or batches  # the last batch is a partial one
        tenth = max(1, len(full) // 10)
        for label, part in (("first", full[:tenth]), ("last", full[-tenth:])):
            ms = 1000 * sum(part) / len(part)
            result.add(f"batch time, {label} tenth", ms, "ms", None, ctx)
    result.add(f"feed generation, {kind} catch-up", write_s, "s", None, ctx)
    rows = queue_report(
        engine, parse_range(START.isoformat(), (START + timedelta(days=30)).isoformat(), "60m")
    )
    offered = sum(r["offered"] for r in rows)
    if offered != n:
        result.notes.append(f"{backend}: ingestion check FAILED: offered {offered} != {n}")
    _reset(engine)


# --- 2. reports at volume ------------------------------------------------------------------

_PG_FILL = """
INSERT INTO report_tasks (task_id, feed_id, code, channel, queue_id, queue_name, queues, status,
  call_disposition, expert_id, created_at, ended_at, wait, ring_time, talk_time, work_time,
  sl_threshold, config_version, node)
SELECT 'v' || i, i, (i % 10000)::text, 'voice', 'q' || (i % 8), 'Queue ' || (i % 8), '[]',
  CASE WHEN i % 10 < 8 THEN 'completed' WHEN i % 10 < 9 THEN 'abandoned' ELSE 'rejected' END,
  CASE WHEN i % 10 < 8 THEN 13 WHEN i % 10 < 9 THEN 2 ELSE 22 END,
  CASE WHEN i % 10 < 8 THEN 'e' || (i % 200) END,
  :start + make_interval(secs => ((i - 1)::bigint * :span / :n)),
  :start + make_interval(secs => ((i - 1)::bigint * :span / :n) + 200),
  (i % 45)::float, 0, CASE WHEN i % 10 < 8 THEN 120 ELSE 0 END, CASE WHEN i % 10 < 8 THEN 10 ELSE 0 END,
  20, 1, 'bench'
FROM generate_series(1, :n) AS i
"""

_SQLITE_FILL = """
WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < :n)
INSERT INTO report_tasks (task_id, feed_id, code, channel, queue_id, queue_name, queues, status,
  call_disposition, expert_id, created_at, ended_at, wait, ring_time, talk_time, work_time,
  sl_threshold, config_version, node)
SELECT 'v' || i, i, CAST(i % 10000 AS TEXT), 'voice', 'q' || (i % 8), 'Queue ' || (i % 8), '[]',
  CASE WHEN i % 10 < 8 THEN 'completed' WHEN i % 10 < 9 THEN 'abandoned' ELSE 'rejected' END,
  CASE WHEN i % 10 < 8 THEN 13 WHEN i % 10 < 9 THEN 2 ELSE 22 END,
  CASE WHEN i % 10 < 8 THEN 'e' || (i % 200) END,
  strftime('%Y-%m-%d %H:%M:%S.000000', :start_epoch + (i - 1) * :span / :n, 'unixepoch'),
  strftime('%Y-%m-%d %H:%M:%S.000000', :start_epoch + (i - 1) * :span / :n + 200, 'unixepoch'),
  CAST(i % 45 AS REAL), 0, CASE WHEN i % 10 < 8 THEN 120 ELSE 0 END,
  CASE WHEN i % 10 < 8 THEN 10 ELSE 0 END, 20, 1, 'bench'
FROM s
"""

_FIGURES = """
SELECT {bucket} AS interval_start, queue_id, max(queue_name) AS queue_name,
  count(*) AS offered,
  sum(CASE WHEN status = 'completed' THEN 1 ELSE 0 END) AS handled,
  sum(CASE WHEN status = 'abandoned' THEN 1 ELSE 0 END) AS abandoned,
  sum(CASE WHEN status = 'overflowed' THEN 1 ELSE 0 END) AS overflowed,
  sum(CASE WHEN status = 'rejected' THEN 1 ELSE 0 END) AS rejected,
  count(*) AS wait_count, sum(wait) AS wait_sum, max(wait) AS wait_max,
  sum(CASE WHEN status = 'completed' AND wait <= sl_threshold THEN 1 ELSE 0 END) AS handled_within_sl,
  sum(CASE WHEN status = 'abandoned' AND wait <= sl_threshold THEN 1 ELSE 0 END) AS abandoned_within_sl,
  sum(CASE WHEN status = 'completed' THEN talk_time + work_time ELSE 0 END) AS handle_time_sum
FROM report_tasks
WHERE created_at >= :lo AND created_at < :hi
GROUP BY 1, 2
"""
_PG_BUCKET = "to_timestamp(floor(extract(epoch from created_at) / 900) * 900)"
_SQLITE_BUCKET = (
    "strftime('%Y-%m-%d %H:%M:%S.000000', "
    "(CAST(strftime('%s', created_at) AS INTEGER) / 900) * 900, 'unixepoch')"
)


def _report_at_volume(engine: Engine, backend: str, n: int, result: BenchResult) -> None:
    _reset(engine)
    span = DAYS * 86400
    pg = engine.dialect.name == "postgresql"
    sw = Stopwatch()
    with engine.begin() as conn:
        if pg:
            conn.execute(text(_PG_FILL), {"start": START, "span": span, "n": n})
        else:
            conn.execute(
                text(_SQLITE_FILL),
                {"start_epoch": int(START.timestamp()), "span": span, "n": n},
            )
    fill_s = sw.seconds()
    figures = _FIGURES.format(bucket=_PG_BUCKET if pg else _SQLITE_BUCKET)
    lo, hi = START, START + timedelta(days=DAYS)
    bounds = {
        "lo": lo if pg else lo.strftime("%Y-%m-%d %H:%M:%S.%f"),
        "hi": hi if pg else hi.strftime("%Y-%m-%d %H:%M:%S.%f"),
    }
    sw = Stopwatch()
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO report_queue_intervals " + figures), bounds)
        if pg:
            conn.execute(text("ANALYZE"))
    build_s = sw.seconds()
    ctx = f"{backend}, {n:,} tasks over {DAYS} days, {QUEUES} queues"
    result.add("data generation", fill_s + build_s, "s", None, ctx)
    rng = parse_range(lo.isoformat(), hi.isoformat(), "60m")
    queue_report(engine, rng)  # warm
    sw = Stopwatch()
    rows = queue_report(engine, rng)
    report_s = sw.seconds()
    target = "<= 1" if n >= 10_000_000 and pg else None
    result.add("30-day queue report (60m)", report_s, "s", target, ctx)
    rng15 = parse_range(lo.isoformat(), hi.isoformat(), "15m")
    sw = Stopwatch()
    queue_report(engine, rng15)
    result.add("30-day queue report (15m)", sw.seconds(), "s", None, ctx)
    sw = Stopwatch()
    with engine.connect() as conn:
        conn.execute(text(figures), bounds).all()
    result.add("30-day figures by SQL from tasks", sw.seconds(), "s", None, ctx)
    offered = sum(r["offered"] for r in rows)
    if offered != n:
        result.notes.append(f"{backend}: report check FAILED: offered {offered} != {n}")
    result.add("rss", current_rss_mb(), "MiB", None, ctx)
