"""The reporting service ingests continuously, survives an unavailable feed, and resumes after
a stop without loss or duplicates."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import REGISTRY
from reporting_scenario import QUEUES_60M, Feed, task, write_all
from sqlalchemy import Engine, func, select

from expertline.db import migrate
from expertline.db.engine import make_engine
from expertline.health import Health
from expertline.records.feed import TASK_RECORD
from expertline.reporting import migrate as reporting_migrate
from expertline.reporting.reports import parse_range, queue_report
from expertline.reporting.service import LAG, ReportingService, create_reporting
from expertline.reporting.tables import report_tasks
from expertline.settings import Settings
from expertline.web.app import AppContext, Services
from support.wait import async_eventually

HOUR = parse_range("2026-11-25T10:00:00Z", "2026-11-25T11:00:00Z", "60m")


def task_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(report_tasks)).scalar_one())


async def test_service_ingests_stops_and_catches_up(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    reporting_migrate.upgrade(engine)
    health = Health()
    ctx = AppContext(Settings(db=db_url, data_dir=tmp_path), engine, Services(health=health))
    service = create_reporting(ctx)
    service.poll_interval = 0.02
    LAG.set(-1)  # so that 0 below can only come from the service
    await service.async_start()
    try:
        feed = write_all(engine)
        await async_eventually(lambda: task_count(engine) == 9, timeout=20)
        assert queue_report(engine, HOUR) == QUEUES_60M
        assert health.components()[0].up
        await async_eventually(
            lambda: REGISTRY.get_sample_value("expertline_reporting_lag_rows") == 0
        )
    finally:
        await service.async_stop()
    later = [task(f"x{n}", 70 + n, "sales", "abandoned", wait=4, version=2) for n in range(25)]
    feed.write([(TASK_RECORD, dict(t)) for t in later])
    assert task_count(engine) == 9  # stopped: nothing moves
    again = create_reporting(ctx)
    again.poll_interval = 0.02
    await again.async_start()
    try:
        await async_eventually(lambda: task_count(engine) == 34, timeout=20)
    finally:
        await again.async_stop()
    after = queue_report(engine, parse_range("2026-11-25T11:00:00Z", "2026-11-25T12:00:00Z", "60m"))
    assert [(r["queue_id"], r["offered"], r["abandoned"]) for r in after] == [("sales", 25, 25)]


async def test_service_retries_until_the_feed_exists(tmp_path: Path) -> None:
    source = make_engine(f"sqlite:///{tmp_path / 'runtime.db'}")  # never migrated yet
    target = make_engine(f"sqlite:///{tmp_path / 'reporting.db'}")
    health = Health()
    service = ReportingService(source, target, health=health, poll_interval=0.02, max_backoff=0.1)
    await service.async_start()  # migrates its own SQLite schema
    try:
        await async_eventually(
            lambda: [c for c in health.components() if c.name == "reporting" and not c.up]
        )
        migrate.upgrade(source)
        Feed(source).write([(TASK_RECORD, dict(task("late", 1, "billing", "completed", wait=2)))])
        await async_eventually(lambda: task_count(target) == 1, timeout=10)
        await async_eventually(
            lambda: [c.up for c in health.components() if c.name == "reporting"] == [True]
        )
    finally:
        await service.async_stop()
        source.dispose()
        target.dispose()
