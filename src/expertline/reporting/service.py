"""The reporting role: ingests the runtime's feed continuously into the reporting database.

Lifecycle: ``async_start`` brings the reporting schema up to date (reporting owns it and its
Alembic chain; a no-op when ``expertline db upgrade`` already did it) and starts one loop;
``async_stop`` ends it within a bound. The loop runs a batch, goes straight on while batches
come back full (catching up), waits ``poll_interval`` when idle, and backs off exponentially
(capped) while the databases fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from prometheus_client import Counter, Gauge
from sqlalchemy import Engine

from expertline.db.engine import make_engine
from expertline.reporting import migrate
from expertline.reporting.ingest import BatchResult, Ingester, feed_head
from expertline.web.app import AppContext

log = logging.getLogger(__name__)

INGESTED = Counter(
    "expertline_reporting_ingested_total", "Feed rows ingested by reporting", ["kind"]
)
LAG = Gauge("expertline_reporting_lag_rows", "Feed rows written but not ingested yet")

STOP_TIMEOUT = 10.0


def reporting_engine(ctx: AppContext) -> Engine:
    """The reporting database: the runtime's engine unless ``reporting_db`` names another."""
    service = ctx.services.reporting
    if service is not None:
        return service.engine
    if ctx.settings.reporting_db_url == ctx.settings.db_url:
        return ctx.engine
    if ctx.services.reporting_engine is None:
        ctx.services.reporting_engine = make_engine(ctx.settings.reporting_db_url)
    return ctx.services.reporting_engine


class ReportingService:
    def __init__(
        self,
        source: Engine,
        target: Engine,
        *,
        health: Any = None,
        required: bool = True,
        poll_interval: float = 0.5,
        max_backoff: float = 30.0,
        batch_size: int = 2000,
        owns_target: bool = False,
    ) -> None:
        self.source = source
        self.engine = target
        self.ingester = Ingester(source, target, batch_size=batch_size)
        self.poll_interval = poll_interval
        self.max_backoff = max_backoff
        self._health = health
        self._required = required
        self._owns_target = owns_target
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.last: BatchResult | None = None

    async def async_start(self) -> None:
        await asyncio.to_thread(self._prepare_schema)
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name="reporting-ingest")
        log.info("reporting started cursor=%d", await asyncio.to_thread(self.ingester.cursor))

    async def async_stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, STOP_TIMEOUT)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
                log.warning("reporting stop timed out after %.0fs; batch abandoned", STOP_TIMEOUT)
            self._task = None
        if self._owns_target:
            self.engine.dispose()
        log.info("reporting stopped")

    def _prepare_schema(self) -> None:
        before, after = migrate.upgrade(self.engine)
        if before != after:
            log.info("reporting schema upgraded from=%s to=%s", before or "empty", after)

    async def _run(self) -> None:
        backoff = self.poll_interval
        while not self._stopping.is_set():
            try:
                result = await asyncio.to_thread(self.ingester.run_once)
            except Exception as exc:
                self._report(False, f"ingestion failed: {exc.__class__.__name__}")
                log.warning(
                    "reporting batch failed error=%r decision=retry in %.1fs",
                    str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__,
                    backoff,
                )
                await self._pause(backoff)
                backoff = min(backoff * 2, self.max_backoff)
                continue
            backoff = self.poll_interval
            self.last = result
            INGESTED.labels("task").inc(result.tasks)
            INGESTED.labels("state").inc(result.states)
            self._report(True, f"cursor {result.cursor}")
            if result.read < self.ingester.batch_size:
                with contextlib.suppress(Exception):  # a gauge is not worth a failed loop
                    LAG.set(max(0, await asyncio.to_thread(feed_head, self.source) - result.cursor))
                await self._pause(self.poll_interval)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    def _report(self, up: bool, detail: str) -> None:
        if self._health is not None:
            self._health.report("reporting", up, detail, required=self._required)


def create_reporting(ctx: AppContext) -> ReportingService:
    """The reporting service for ``--role reporting`` (and ``all``)."""
    separate = ctx.settings.reporting_db_url != ctx.settings.db_url
    target = make_engine(ctx.settings.reporting_db_url) if separate else ctx.engine
    return ReportingService(
        ctx.engine,
        target,
        health=ctx.services.health,
        required=ctx.settings.role == "reporting",
        owns_target=separate,
    )
