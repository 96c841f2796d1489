"""The live board behind the dashboard: experts by state, queues, tasks in flight, nodes.

One board per node, running while a dashboard is open. It reads what the runtime committed,
so it works the same on the active node, on a standby and on an admin-only node:

- experts: one scan of ``runtime_experts`` (the state column of each expert), then every
  ``expert.state`` row of the event feed (``routing_feed``), in order, each setting one
  expert's state (so replaying a row is harmless);
- tasks: the active rows of ``runtime_tasks``, counted by status and by queue;
- service level today: the reporting figures since midnight UTC (``reporting.reports``);
- nodes: each node's row (``web.nodes``).

However many events arrive, subscribers get at most one picture per ``TICK`` (coalesced),
and one every ``QUIET`` seconds when nothing happens (waits and node states move anyway).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, select

from expertline.config import store as config_store
from expertline.db.tables import routing_feed, runtime_experts, runtime_tasks
from expertline.records.feed import EXPERT_STATE
from expertline.runtime import store as runtime_store
from expertline.web.app import AppContext
from expertline.web.nodes import known_nodes

log = logging.getLogger(__name__)

TICK = 0.25  # seconds: at most four pictures a second, whatever the event rate
QUIET = 2.0
SL_EVERY = 10.0
FEED_BATCH = 5000
BUCKETS = ("available", "offered", "busy", "wrap_up", "away", "offline")
#: The core's expert states (``records.feed.ExpertState``) as the dashboard groups them.
BUCKET_OF = {
    "available": "available",
    "reserved": "offered",
    "busy": "busy",
    "wrap_up": "wrap_up",
    "away": "away",
    "dnd": "away",
    "offline": "offline",
}
WAITING = ("queued", "offered")


@dataclass
class Board:
    """The figures, as last computed."""

    experts: dict[str, str] = field(default_factory=dict)  # id -> bucket, offline left out
    config_version: int = -1
    known: frozenset[str] = frozenset()
    cursor: int = 0
    events: int = 0
    sl: dict[str, tuple[int, int]] = field(default_factory=dict)  # queue -> (within, handled)
    sl_at: float = 0.0


class LiveBoard:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.engine: Engine = ctx.engine
        self.board = Board()
        self._subscribers: set[asyncio.Queue[dict[str, Any]]] = set()
        self._task: asyncio.Task[None] | None = None
        self.last: dict[str, Any] | None = None
        self._lock = threading.Lock()  # refresh and picture run in worker threads

    # --- subscribers ---------------------------------------------------------------------

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1)
        self._subscribers.add(queue)
        if self.last is not None:
            queue.put_nowait(self.last)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="web-live-board")
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self._subscribers.discard(queue)

    def _publish(self, picture: dict[str, Any]) -> None:
        self.last = picture
        for queue in self._subscribers:
            if queue.full():  # a slow reader gets the newest picture, not a backlog
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait(picture)

    async def async_stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # --- the loop ------------------------------------------------------------------------

    async def _run(self) -> None:
        """Runs while someone watches; stops a little after the last one leaves."""
        idle_since: float | None = None
        last_sent = 0.0
        while True:
            if not self._subscribers:
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since > 30:
                    return
            else:
                idle_since = None
            try:
                changed = await asyncio.to_thread(self.refresh)
                now = time.monotonic()
                if changed or now - last_sent >= QUIET or self.last is None:
                    self._publish(await asyncio.to_thread(self.picture))
                    last_sent = now
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the next tick tries again
                log.warning("live board refresh failed error=%r", exc)
            await self._wait_for_events()

    async def _wait_for_events(self) -> None:
        """Sleep one tick; with a runtime in this process, wake early for new events."""
        runtime = self.ctx.services.runtime
        start = time.monotonic()
        if runtime is not None and runtime.running:
            with contextlib.suppress(Exception):
                await runtime.async_wait_feed(self.board.cursor, QUIET)
        elapsed = time.monotonic() - start
        await asyncio.sleep(max(0.0, TICK - elapsed))

    # --- reading (in a thread) ---------------------------------------------------------------

    def refresh(self) -> bool:
        """Bring the expert states up to date; True if anything changed."""
        with self._lock:
            return self._refresh()

    def _refresh(self) -> bool:
        b = self.board
        version = config_store.current_version(self.engine)
        changed = False
        if version != b.config_version:
            _, doc = config_store.load_document(self.engine)
            b.known = frozenset(doc.expert_map)
            b.config_version = version
            self._scan()
            changed = True
        while True:
            rows = runtime_store.read_feed(self.engine, b.cursor, FEED_BATCH)
            for row in rows:
                b.cursor = row["id"]
                b.events += 1
                changed = True
                if row["type"] == EXPERT_STATE and row["expert_id"] in b.known:
                    self._set(row["expert_id"], str((row["data"] or {}).get("state")))
            if len(rows) < FEED_BATCH:
                return changed

    def _scan(self) -> None:
        b = self.board
        with self.engine.connect() as conn:
            b.cursor = int(
                conn.execute(select(func.coalesce(func.max(routing_feed.c.id), 0))).scalar_one()
            )
            rows = conn.execute(
                select(runtime_experts.c.expert_id, runtime_experts.c.state["state"].as_string())
            ).all()
        b.experts = {}
        for expert_id, state in rows:
            if expert_id in b.known:
                self._set(expert_id, str(state))

    def _set(self, expert_id: str, state: str) -> None:
        bucket = BUCKET_OF.get(state, "offline")
        if bucket == "offline":
            self.board.experts.pop(expert_id, None)
        else:
            self.board.experts[expert_id] = bucket

    def picture(self) -> dict[str, Any]:
        """Everything the dashboard shows, as JSON-ready data."""
        with self._lock:
            return self._picture()

    def _picture(self) -> dict[str, Any]:
        b = self.board
        counts = Counter(b.experts.values())
        total = len(b.known)
        experts = {bucket: counts.get(bucket, 0) for bucket in BUCKETS}
        experts["offline"] = total - sum(v for k, v in experts.items() if k != "offline")
        experts["total"] = total
        with self.engine.connect() as conn:
            by_status: dict[str, int] = dict(
                conn.execute(
                    select(runtime_tasks.c.status, func.count())
                    .where(runtime_tasks.c.active)
                    .group_by(runtime_tasks.c.status)
                ).all()
            )
            waiting = {
                q: (n, oldest)
                for q, n, oldest in conn.execute(
                    select(
                        runtime_tasks.c.queue_id,
                        func.count(),
                        func.min(runtime_tasks.c.created_at),
                    )
                    .where(runtime_tasks.c.active, runtime_tasks.c.status.in_(WAITING))
                    .group_by(runtime_tasks.c.queue_id)
                ).all()
            }
        self._service_levels()
        _, doc = config_store.load_document(self.engine)
        queues = []
        for q in doc.queues:
            n, oldest = waiting.get(q.id, (0, None))
            within, handled = b.sl.get(q.id, (0, 0))
            queues.append(
                {
                    "id": q.id,
                    "name": q.name,
                    "waiting": int(n),
                    "oldest": _epoch(oldest),
                    "handled_today": handled,
                    "service_level": round(within / handled, 4) if handled else None,
                    "threshold": q.service_level,
                }
            )
        nodes = [
            {
                "node": n.node,
                "url": n.url,
                "role": n.role,
                "active": n.active,
                "fresh": n.fresh,
                "here": n.here,
                "links": [c for c in n.components if str(c["name"]).startswith("presence")],
                "components": n.components,
            }
            for n in known_nodes(self.ctx)
        ]
        return {
            "at": time.time(),
            "cursor": b.cursor,
            "events": b.events,
            "config_version": b.config_version,
            "experts": experts,
            "tasks": {
                "in_flight": sum(int(v) for v in by_status.values()),
                **{str(k): int(v) for k, v in by_status.items()},
            },
            "queues": queues,
            "nodes": nodes,
        }

    def _service_levels(self) -> None:
        """Handled within the queue's threshold / handled, since midnight UTC (reporting)."""
        b = self.board
        if time.monotonic() - b.sl_at < SL_EVERY:
            return
        b.sl_at = time.monotonic()
        try:
            from expertline.reporting.reports import ReportRange, queue_figures
            from expertline.reporting.service import reporting_engine

            now = datetime.now(UTC)
            midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
            figures = queue_figures(reporting_engine(self.ctx), ReportRange(midnight, now, 60))
        except Exception as exc:  # no reporting schema here: the column stays empty
            log.debug("service level not read error=%r", exc)
            return
        sl: dict[str, tuple[int, int]] = {}
        for (_, queue_id), f in figures.items():
            within, handled = sl.get(queue_id, (0, 0))
            sl[queue_id] = (within + int(f.handled_within_sl), handled + int(f.handled))
        b.sl = sl


def _epoch(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    return None


def board_of(ctx: AppContext) -> LiveBoard:
    if ctx.services.live_board is None:
        ctx.services.live_board = LiveBoard(ctx)
    return ctx.services.live_board
