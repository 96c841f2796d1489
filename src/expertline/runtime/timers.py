"""Named timers for the routing core: a heap keyed by the core's timer keys.

The core says ``SetTimer(key, at)`` / ``CancelTimer(key)``; setting a key again moves it. The
heap keeps stale entries until they surface (lazy deletion) and compacts itself when they
outnumber the live ones, so memory stays bounded by the number of live timers.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import Callable

from expertline.routing.timers import TimerKey


class TimerHeap:
    """Pure data structure, no clock: the service asks what is due at a given time."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, TimerKey]] = []
        self._live: dict[TimerKey, tuple[float, int]] = {}
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, key: TimerKey) -> bool:
        return key in self._live

    def set(self, key: TimerKey, at: float) -> None:
        seq = next(self._seq)
        self._live[key] = (at, seq)
        heapq.heappush(self._heap, (at, seq, key))
        if len(self._heap) > 64 and len(self._heap) > 2 * len(self._live):
            self._compact()

    def cancel(self, key: TimerKey) -> None:
        self._live.pop(key, None)

    def clear(self) -> None:
        """Forget every timer (a rewind: the restored core sets its timers again). The heap
        stays the same object, so whoever holds its ``set`` or ``cancel`` keeps reaching it."""
        self._heap.clear()
        self._live.clear()

    def live(self) -> list[TimerKey]:
        """The live timers, in no particular order."""
        return list(self._live)

    def due_at(self, key: TimerKey) -> float | None:
        entry = self._live.get(key)
        return entry[0] if entry else None

    def next_due(self) -> float | None:
        """When the earliest live timer is due, or None when there is none."""
        self._drop_stale()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float, limit: int = 10_000) -> list[TimerKey]:
        """Keys due at ``now`` in due order (at most ``limit``); they are removed."""
        fired: list[TimerKey] = []
        while self._heap and len(fired) < limit:
            at, seq, key = self._heap[0]
            if self._live.get(key) != (at, seq):
                heapq.heappop(self._heap)
                continue
            if at > now:
                break
            heapq.heappop(self._heap)
            del self._live[key]
            fired.append(key)
        return fired

    def _drop_stale(self) -> None:
        while self._heap:
            at, seq, key = self._heap[0]
            if self._live.get(key) == (at, seq):
                return
            heapq.heappop(self._heap)

    def _compact(self) -> None:
        self._heap = [(at, seq, key) for key, (at, seq) in self._live.items()]
        heapq.heapify(self._heap)


async def async_run(
    heap: TimerHeap,
    wake: asyncio.Event,
    clock: Callable[[], float],
    due: Callable[[TimerKey], None],
) -> None:
    """Hand every key that falls due to ``due``, in due order; look again when ``wake`` is set
    (a new earliest timer), at the next due time, or after a second at most. The heap is the
    node's one heap for its life: a rewind clears it in place."""
    while True:
        wake.clear()
        now = clock()
        fired = heap.pop_due(now)
        for key in fired:
            due(key)
        nxt = heap.next_due()
        wait = 1.0 if nxt is None else max(0.0, min(1.0, nxt - now))
        if fired and wait == 0.0:
            await asyncio.sleep(0)
            continue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=wait)
