"""A time-skipping clock for asyncio code that takes a ``Clock`` (``now()``, ``wait()``).

Time moves only when the test says so: ``advance(seconds)`` ends, in order, every wait whose
time comes and lets the loop run after each, so seconds of protocol pass in microseconds and
a test states exactly when something happens. Code under test must do its I/O without
threads (pass it an inline runner) for the loop to settle between steps.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable, Collection
from typing import Any


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.t = start
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self.t

    async def wait(self, waits: Collection[asyncio.Future[Any]], until: float) -> None:
        if until <= self.t or any(w.done() for w in waits):
            await asyncio.sleep(0)
            return
        timer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._timers, (until, next(self._order), timer))
        try:
            await asyncio.wait({*waits, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()

    async def sleep(self, seconds: float) -> None:
        await self.wait((), self.t + seconds)

    @staticmethod
    async def settle() -> None:
        """Let every ready callback run (no threads: this is enough for inline I/O)."""
        for _ in range(200):
            await asyncio.sleep(0)

    async def advance(self, seconds: float, stop: Callable[[], bool] | None = None) -> None:
        """Move time ``seconds`` on, ending due waits in order; with ``stop``, halt at the
        first instant after which ``stop()`` holds."""
        target = self.t + seconds
        await self.settle()
        while self._timers and self._timers[0][0] <= target:
            if stop is not None and stop():
                return
            until, _, timer = heapq.heappop(self._timers)
            if timer.done():
                continue
            self.t = max(self.t, until)
            timer.set_result(None)
            await self.settle()
        if stop is None or not stop():
            self.t = target
            await self.settle()

    async def until(self, check: Callable[[], bool], limit: float) -> float:
        """Advance until ``check()`` holds; the fake seconds it took (exact: time stops at
        the wait that made it true). Fails after ``limit`` fake seconds."""
        started = self.t
        await self.advance(limit, stop=check)
        if not check():
            raise AssertionError(f"still false after {limit} fake seconds")
        return self.t - started
