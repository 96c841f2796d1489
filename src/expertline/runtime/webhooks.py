"""Task status webhooks to the routing client's ``callback_url``: durable, retried, in order.

Deliveries are rows of ``webhook_deliveries`` written in the same transaction as the status
change they announce. This sender posts the due ones; a 2xx answer marks a delivery done,
anything else (error, timeout, other status) schedules the next attempt after a capped
exponential backoff with jitter, until ``max_attempts`` mark it failed. Deliveries of one task
go out in order: a task's later deliveries wait while an earlier one is being retried.

Every error of an attempt counts, whatever raised it (a URL the client cannot even build, a
refused connection, a bad answer): one delivery that can never succeed only waits for its own
next attempt and never holds up the others. ``callback_url_problem`` is the check the API
applies to a ``callback_url`` before any delivery is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import Engine

from expertline import limits
from expertline.runtime import store

log = logging.getLogger("expertline.runtime.webhooks")

SCAN_ROWS = 200  # deliveries read per scan
RETRY_SCAN = 2.0  # seconds before scanning again after the database failed us
MAX_ERROR_CHARS = 500
_HOST_NAME = re.compile(r"[A-Za-z0-9._-]+")  # a name's ASCII form (IDNA), or an IPv4 address


def callback_url_problem(url: str) -> str | None:
    """Why the sender could never post to ``url`` (None when it can): an absolute http or
    https URL with a host and, if given, a port from 1 to 65535; no spaces or control
    characters; at most ``limits.URL`` characters. It is parsed by the sender's own HTTP
    client, so a URL accepted here is one the sender can build a request for."""
    why = limits.text_problem(url, limits.URL)
    if why:
        return why
    if any(ch.isspace() for ch in url):
        return "must not contain spaces"
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError) as exc:  # IDNA errors are ValueErrors
        return f"is not a valid URL ({exc})"
    if parsed.scheme not in ("http", "https") or not url.lower().startswith(parsed.scheme):
        return "must be an absolute http:// or https:// URL"
    host = parsed.raw_host.decode("ascii", "replace")
    if not host:
        return "needs a host (http://HOST/...)"
    if ":" not in host and not _HOST_NAME.fullmatch(host):  # ':' only in an IPv6 literal
        return f"has an invalid host {host[:255]!r}"
    if parsed.port is not None and not 1 <= parsed.port <= 65535:
        return f"has port {parsed.port}; a port is a number from 1 to 65535"
    return None


def error_text(exc: BaseException) -> str:
    """An attempt's error as stored in ``last_error``: one line, bounded, no control
    characters (PostgreSQL refuses NUL in text, and the error may quote the URL)."""
    text = f"{type(exc).__name__}: {exc}"
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text[:MAX_ERROR_CHARS]


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
                stored = await self._deliver_due()
                next_due = await asyncio.to_thread(store.next_webhook_due, self._engine)
                if not stored:  # an outcome could not be written: do not spin on it
                    next_due = self._clock() + timedelta(seconds=RETRY_SCAN)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # database trouble: look again a little later
                log.warning("webhook scan failed error=%r; retrying in %.0fs", exc, RETRY_SCAN)
                next_due = self._clock() + timedelta(seconds=RETRY_SCAN)
            wait = 30.0
            if next_due is not None:
                wait = max(0.0, min(wait, (next_due - self._clock()).total_seconds()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)

    async def _deliver_due(self) -> bool:
        """Attempt every due delivery, a scan at a time. False when the outcome of an attempt
        could not be stored (that delivery is still due: the caller waits before the next
        scan instead of trying it again at once)."""
        while True:
            rows = await asyncio.to_thread(
                store.due_webhooks, self._engine, self._clock(), SCAN_ROWS
            )
            if not rows:
                return True
            per_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for row in rows:
                per_task[row["task_id"]].append(row)
            stored = await asyncio.gather(
                *(self._deliver_chain(chain) for chain in per_task.values())
            )
            if not all(stored):
                return False
            # Every attempted row is now delivered, given up or scheduled later: a full scan
            # means more may be due behind it.
            if len(rows) < SCAN_ROWS:
                return True

    async def _deliver_chain(self, chain: list[dict[str, Any]]) -> bool:
        """Deliver one task's due rows in order, up to the first that fails. False only when
        an outcome could not be stored; one chain's trouble never stops the others."""
        for row in chain:
            try:
                async with self._sem:
                    ok = await self._attempt(row)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "webhook attempt not recorded id=%s task=%s error=%s; retrying in %.0fs",
                    row["id"],
                    row["task_id"],
                    error_text(exc),
                    RETRY_SCAN,
                )
                return False
            if not ok:
                return True
        return True

    async def _attempt(self, row: dict[str, Any]) -> bool:
        """Post one delivery and store the outcome; True when it was delivered. Raises only
        when the outcome cannot be stored."""
        assert self._client is not None
        attempts = int(row["attempts"]) + 1
        status: int | None = None
        try:
            response = await self._client.post(
                row["url"],
                json=row["body"],
                headers={
                    "X-Expertline-Delivery": str(row["id"]),
                    "X-Expertline-Attempt": str(attempts),
                },
            )
            status = response.status_code
            error = None if 200 <= status < 300 else f"HTTP {status}"
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any error counts, even one building the request
            error = error_text(exc)
        if error is None:
            await asyncio.to_thread(
                store.record_webhook_attempt,
                self._engine,
                row["id"],
                attempts,
                delivered_at=self._clock(),
            )
            self.delivered += 1
            log.info(
                "webhook delivered id=%s task=%s attempt=%d status=%s",
                row["id"],
                row["task_id"],
                attempts,
                status,
            )
            return True
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
