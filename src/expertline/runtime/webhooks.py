"""Task status webhooks to the routing client's ``callback_url``: durable, retried, in order.

Deliveries are rows of ``webhook_deliveries`` written in the same transaction as the status
change they announce. This sender posts the due ones; a 2xx answer marks a delivery done,
anything else (error, timeout, other status) schedules the next attempt after a capped
exponential backoff with jitter, until ``max_attempts`` mark it failed. Deliveries of one task
go out in order: a task's later deliveries wait while an earlier one is being retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import Engine

from expertline.runtime import store

log = logging.getLogger("expertline.runtime.webhooks")


def backoff(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Seconds before retry number ``attempt`` (1-based): base·2^(n-1), capped, 50-100% jitter."""
    delay = min(cap, base * (2 ** max(0, attempt - 1)))
    return delay * (0.5 + rng.random() / 2)


class WebhookSender:
    def __init__(
        self,
        engine: Engine,
        *,
        base_delay: float = 1.0,
        max_delay: float = 300.0,
        max_attempts: int = 20,
        timeout: float = 5.0,
        concurrency: int = 8,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._engine = engine
        self._base = base_delay
        self._cap = max_delay
        self._max_attempts = max_attempts
        self._timeout = timeout
        self._clock = clock
        self._rng = random.Random()
        self._sem = asyncio.Semaphore(concurrency)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self.delivered = 0

    def poke(self) -> None:
        """New deliveries were committed: look now instead of at the next scheduled time."""
        self._wake.set()

    async def async_start(self) -> None:
        self._client = httpx.AsyncClient(timeout=self._timeout, follow_redirects=False)
        self._task = asyncio.create_task(self._run(), name="webhook-sender")

    async def async_stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self._deliver_due()
                next_due = await asyncio.to_thread(store.next_webhook_due, self._engine)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # database trouble: look again a little later
                log.warning("webhook scan failed error=%r; retrying in 2s", exc)
                next_due = self._clock() + timedelta(seconds=2)
            wait = 30.0
            if next_due is not None:
                wait = max(0.0, min(wait, (next_due - self._clock()).total_seconds()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)

    async def _deliver_due(self) -> None:
        while True:
            rows = await asyncio.to_thread(store.due_webhooks, self._engine, self._clock(), 200)
            if not rows:
                return
            per_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for row in rows:
                per_task[row["task_id"]].append(row)
            results = await asyncio.gather(
                *(self._deliver_chain(chain) for chain in per_task.values())
            )
            if not all(results) or len(rows) < 200:
                return

    async def _deliver_chain(self, chain: list[dict[str, Any]]) -> bool:
        """Deliver one task's due rows in order; stop at the first failure."""
        for row in chain:
            async with self._sem:
                ok = await self._attempt(row)
            if not ok:
                return False
        return True

    async def _attempt(self, row: dict[str, Any]) -> bool:
        assert self._client is not None
        attempts = int(row["attempts"]) + 1
        error: str | None = None
        try:
            response = await self._client.post(
                row["url"],
                json=row["body"],
                headers={
                    "X-Expertline-Delivery": str(row["id"]),
                    "X-Expertline-Attempt": str(attempts),
                },
            )
            if 200 <= response.status_code < 300:
                await asyncio.to_thread(
                    store.record_webhook_attempt,
                    self._engine,
                    row["id"],
                    attempts,
                    delivered_at=self._clock(),
                )
                self.delivered += 1
                log.info(
                    "webhook delivered id=%s task=%s attempt=%d status=%d",
                    row["id"],
                    row["task_id"],
                    attempts,
                    response.status_code,
                )
                return True
            error = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        if attempts >= self._max_attempts:
            await asyncio.to_thread(
                store.record_webhook_attempt,
                self._engine,
                row["id"],
                attempts,
                failed_at=self._clock(),
                error=error,
            )
            log.warning(
                "webhook given up id=%s task=%s attempts=%d error=%s",
                row["id"],
                row["task_id"],
                attempts,
                error,
            )
            return False
        delay = backoff(attempts, self._base, self._cap, self._rng)
        await asyncio.to_thread(
            store.record_webhook_attempt,
            self._engine,
            row["id"],
            attempts,
            next_attempt_at=self._clock() + timedelta(seconds=delay),
            error=error,
        )
        log.info(
            "webhook failed id=%s task=%s attempt=%d error=%s; next attempt in %.1fs",
            row["id"],
            row["task_id"],
            attempts,
            error,
            delay,
        )
        return False
