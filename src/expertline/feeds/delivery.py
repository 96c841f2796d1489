"""Record feed webhooks: each target gets the RCD and TCD records in order, signed, at least once.

One lane per target and kind (``rcd``, ``tcd``) runs on its own: it reads the records after
its durable cursor (``cursors.py``), posts them as one JSON page, and moves the cursor once
the target answers 2xx. Anything else (another status, a timeout, a refused connection) is
retried with a capped exponential backoff with jitter, for as long as it takes: records are
never skipped, and one target that is down holds up only its own lanes. A crash between a
delivery and its cursor write sends that page again (the receiver deduplicates on
``X-Expertline-Delivery``, or on each record's ``recovery_key``).

Lanes deliver only while this node's runtime runs (on an HA pair: the active node), and
wake when the runtime commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from sqlalchemy import Engine

from expertline.feeds import cursors
from expertline.feeds.signing import HEADER, sign
from expertline.feeds.targets import RecordFeedTarget, check_unique
from expertline.runtime import store
from expertline.runtime.ports import RuntimePort
from expertline.runtime.webhooks import backoff, error_text

log = logging.getLogger("expertline.feeds")

POLL = 1.0  # seconds between looks for new records when the runtime does not wake a lane


@dataclass
class Lane:
    """One target's feed of one kind."""

    target: RecordFeedTarget
    kind: str
    secret: bytes = field(repr=False)
    cursor: int | None = None  # None until read from the database
    behind: int = 0  # records after the cursor, as last seen
    delivered: int = 0  # records delivered since the start
    attempts: int = 0  # failed attempts of the current page


class RecordFeeds:
    """Delivers the record feed to every configured target (``async_start``/``async_stop``)."""

    def __init__(
        self,
        engine: Engine,
        targets: list[RecordFeedTarget],
        runtime: RuntimePort | None = None,
        *,
        base_delay: float = 1.0,
        max_delay: float = 300.0,
        timeout: float = 5.0,
        poll: float = POLL,
    ) -> None:
        check_unique(targets)
        self._engine = engine
        self._runtime = runtime
        self._base = base_delay
        self._cap = max_delay
        self._timeout = timeout
        self._poll = poll
        self._rng = random.Random()
        # Each target's secret is read now: a missing one stops the start with its name.
        self.lanes = [Lane(t, kind, t.secret()) for t in targets for kind in t.kinds]
        self._tasks: list[asyncio.Task[None]] = []
        self._client: httpx.AsyncClient | None = None

    async def async_start(self) -> None:
        self._client = httpx.AsyncClient(timeout=self._timeout, follow_redirects=False)
        for lane in self.lanes:
            name = f"record-feed:{lane.target.id}:{lane.kind}"
            self._tasks.append(asyncio.create_task(self._run(lane), name=name))
            log.info(  # the host only: a URL may carry credentials
                "record feed started feed=%s kind=%s host=%s",
                lane.target.id,
                lane.kind,
                httpx.URL(lane.target.url).host,
            )

    async def async_stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def backlog(self) -> dict[str, int]:
        """Records not delivered yet, per target (``feed:<id>``), as last seen."""
        out: dict[str, int] = {}
        for lane in self.lanes:
            name = f"feed:{lane.target.id}"
            out[name] = out.get(name, 0) + lane.behind
        return out

    # --- a lane ---------------------------------------------------------------------------

    def _active(self) -> bool:
        return self._runtime is None or self._runtime.running

    async def _idle(self, seen: int) -> None:
        """Wait for the runtime's next commit after feed id ``seen``, at most ``poll``."""
        runtime = self._runtime
        if runtime is not None and self._active():
            await runtime.async_wait_feed(seen, self._poll)
        else:
            await asyncio.sleep(self._poll)

    async def _run(self, lane: Lane) -> None:
        errors = 0
        while True:
            try:
                await self._step(lane)
                errors = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database failed us: look again after a pause
                errors += 1
                delay = backoff(errors, self._base, self._cap, self._rng)
                log.warning(
                    "record feed could not read or store its cursor feed=%s kind=%s error=%s; "
                    "retrying in %.1fs",
                    lane.target.id,
                    lane.kind,
                    error_text(exc),
                    delay,
                )
                await asyncio.sleep(delay)

    async def _step(self, lane: Lane) -> None:
        if not self._active():
            lane.cursor = None  # the other node may move it meanwhile: read it again later
            await self._idle(0)
            return
        if lane.cursor is None:
            loaded = await asyncio.to_thread(cursors.load, self._engine, lane.target.id)
            lane.cursor = loaded.get(lane.kind, 0)
        seen = self._runtime.last_feed_id if self._runtime is not None else 0
        rows = await asyncio.to_thread(self._page, lane)
        if not rows:
            await self._idle(seen)
            return
        last = int(rows[-1]["recovery_key"])
        body = orjson.dumps(
            {
                "feed": lane.target.id,
                "kind": lane.kind,
                "items": [store.record_json(r) for r in rows],
                "next": str(last),
            },
            option=orjson.OPT_NON_STR_KEYS,  # as the API writes them (record data may have any)
        )
        delivery = f"{lane.target.id}:{lane.kind}:{rows[0]['recovery_key']}-{last}"
        while not await self._post(lane, body, delivery):
            lane.attempts += 1
            delay = backoff(lane.attempts, self._base, self._cap, self._rng)
            await asyncio.sleep(delay)
            if not self._active():
                return  # not delivered, cursor unchanged: whoever is active sends it
        lane.attempts = 0
        await asyncio.to_thread(cursors.save, self._engine, lane.target.id, lane.kind, last)
        lane.cursor = last
        lane.delivered += len(rows)
        lane.behind = max(0, lane.behind - len(rows))

    def _page(self, lane: Lane) -> list[dict[str, Any]]:
        assert lane.cursor is not None
        rows = store.read_records(self._engine, lane.kind, lane.cursor, lane.target.batch)
        full = len(rows) == lane.target.batch
        lane.behind = (
            store.count_records(self._engine, lane.kind, lane.cursor) if full else len(rows)
        )
        return rows

    async def _post(self, lane: Lane, body: bytes, delivery: str) -> bool:
        """One attempt; True when the target answered 2xx."""
        assert self._client is not None
        headers = {
            "Content-Type": "application/json",
            HEADER: sign(lane.secret, body, time.time()),
            "X-Expertline-Feed": lane.target.id,
            "X-Expertline-Delivery": delivery,
            "X-Expertline-Attempt": str(lane.attempts + 1),
        }
        try:
            response = await self._client.post(lane.target.url, content=body, headers=headers)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = error_text(exc)
        else:
            if 200 <= response.status_code < 300:
                if lane.attempts:
                    log.info(
                        "record feed delivered after retries feed=%s delivery=%s attempts=%d",
                        lane.target.id,
                        delivery,
                        lane.attempts + 1,
                    )
                return True
            error = f"HTTP {response.status_code}"
        log.warning(
            "record feed delivery failed feed=%s delivery=%s attempt=%d error=%s; "
            "retrying with backoff",
            lane.target.id,
            delivery,
            lane.attempts + 1,
            error,
        )
        return False


def create_record_feeds(ctx: Any, runtime: Any) -> RecordFeeds:
    """The node's record feeds from its settings; ValueError names what is wrong."""
    return RecordFeeds(ctx.engine, list(ctx.settings.record_feeds), runtime)
