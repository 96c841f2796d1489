"""The committed read model: what callers see of tasks and offers, published only after the
batch that made it has committed (a caller never sees a state that a crash could take back).

Ended tasks stay for ``RECENT_ENDED`` more; older ones are read from the database. Long polls
wait here for a task's status to change.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from typing import Any

from expertline.runtime.ports import OfferView, TaskView
from expertline.runtime.projection import ACTIVE_STATUSES, Closed

RECENT_ENDED = 20_000  # ended tasks kept in memory for reads; older ones come from the database
MAX_WAIT = 60.0  # longest long-poll


class CommittedViews:
    def __init__(self) -> None:
        self.live: dict[str, TaskView] = {}
        self.ended: OrderedDict[str, TaskView] = OrderedDict()
        self.meta: dict[str, dict[str, Any]] = {}  # origin, callback URL, external id, ...
        self.by_external: dict[str, str] = {}
        self.open_offers: dict[str, dict[str, OfferView]] = {}
        self.offers: dict[str, OfferView] = {}
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}

    def task(self, task_id: str) -> TaskView | None:
        return self.live.get(task_id) or self.ended.get(task_id)

    def known(self, task_id: str) -> bool:
        return task_id in self.live or task_id in self.ended

    def offers_of(self, expert_id: str) -> list[OfferView]:
        """The expert's open offers, oldest first."""
        offers = self.open_offers.get(expert_id, {})
        return sorted(offers.values(), key=lambda o: (o.created_at, o.id))

    # --- publishing ---------------------------------------------------------------------------

    def publish(self, closed: Closed) -> None:
        """A batch committed: its task and offer views are what callers read from now on."""
        for view in closed.tasks.values():
            self.publish_task(view)
        for offer in closed.offers.values():
            self.publish_offer(offer)

    def publish_task(self, view: TaskView) -> None:
        tid = view.id
        old = self.live.get(tid)
        if view.status in ACTIVE_STATUSES:
            self.live[tid] = view
        else:
            self.live.pop(tid, None)
            self.ended[tid] = view
            self.ended.move_to_end(tid)
            while len(self.ended) > RECENT_ENDED:
                gone, gone_view = self.ended.popitem(last=False)
                self.meta.pop(gone, None)
                external_id = gone_view.extra.get("external_id")
                if external_id and self.by_external.get(external_id) == gone:
                    del self.by_external[external_id]
        if old is None or old.status != view.status:
            for fut in self._waiters.pop(tid, []):
                if not fut.done():
                    fut.set_result(None)

    def publish_offer(self, view: OfferView) -> None:
        offer_id = view.id
        self.offers[offer_id] = view
        per_expert = self.open_offers.setdefault(view.expert_id, {})
        if view.status == "open":
            per_expert[offer_id] = view
        else:
            per_expert.pop(offer_id, None)
            if not per_expert:
                self.open_offers.pop(view.expert_id, None)
            if len(self.offers) > 4 * RECENT_ENDED:
                for stale in list(self.offers)[:RECENT_ENDED]:
                    if self.offers[stale].status != "open":
                        del self.offers[stale]

    def forget_uncommitted(self) -> None:
        """Drop the metadata and external ids of tasks no batch committed (after a rewind)."""
        for task_id in [t for t in self.meta if not self.known(t)]:
            del self.meta[task_id]
        for external_id in [e for e, t in self.by_external.items() if not self.known(t)]:
            del self.by_external[external_id]

    # --- waiting ------------------------------------------------------------------------------

    async def async_wait_change(self, task_id: str, seen_status: str, timeout: float) -> None:
        """Return once the task's published status differs from ``seen_status`` (or at
        ``timeout``, at most ``MAX_WAIT``)."""
        view = self.task(task_id)
        if view is None or view.status != seen_status:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(task_id, []).append(fut)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(fut, timeout=max(0.0, min(timeout, MAX_WAIT)))
        finally:
            waiters = self._waiters.get(task_id)
            if waiters is not None:
                with contextlib.suppress(ValueError):
                    waiters.remove(fut)
                if not waiters:
                    self._waiters.pop(task_id, None)

    def release_waiters(self) -> None:
        """The runtime stops: every long poll returns now."""
        for waiters in self._waiters.values():
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)


class FeedCursor:
    """The id of the last committed feed row; live pages and streams wait here for newer rows."""

    def __init__(self) -> None:
        self.last = 0
        self._cond = asyncio.Condition()

    def advance(self, last: int) -> None:
        """A batch with feed rows up to ``last`` committed: wake whoever waits."""
        self.last = last
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._cond:
            self._cond.notify_all()

    async def async_wait(self, after: int, timeout: float) -> int:
        """The last feed id once the feed has rows after ``after`` (or at ``timeout``)."""
        if self.last > after:
            return self.last
        async with self._cond:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._cond.wait_for(lambda: self.last > after), timeout)
        return self.last
