"""The lease keeper: a node service that runs the routing runtime only while it holds the lease.

Each cycle observes (the token this node holds, the database's last answer, the runtime's
state, a refused commit, a stop, a release announced by NOTIFY), asks ``decide`` what to do,
logs its sentence and does it: try the lease, start the runtime, renew, wait, step down, or
release. Database calls run in a worker thread and are given up after ``retry_timeout``
(the database gives them up too); waits end early when something wakes the keeper. Time comes
from a ``Clock``, so tests drive the keeper on a fake one.

Health: ``active`` (``/readyz``, the SIP front, the HTTP API) is true once the runtime has
started under the lease, and false from the moment the keeper decides to step down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Collection
from typing import Any, Protocol, TypeVar

from expertline.ha.decide import (
    Action,
    Answer,
    LeaseTimes,
    Observation,
    Reply,
    Runtime,
    Step,
    Why,
    decide,
    node_of,
)
from expertline.ha.lease import Grant, Held

log = logging.getLogger("expertline.ha")

T = TypeVar("T")


class LeaseStorePort(Protocol):
    """The lease row (``lease.LeaseStore`` on PostgreSQL)."""

    def acquire(self, holder: str, ttl: float) -> Grant | Held: ...

    def renew(self, holder: str, token: int, ttl: float) -> bool: ...

    def release(self, holder: str, token: int) -> bool: ...


class RoutingRuntime(Protocol):
    """What the keeper drives: the routing runtime of this node."""

    fence: int | None
    on_fenced: Callable[[], None] | None
    failover_from: str | None

    async def async_start(self) -> None: ...

    async def async_stop(self) -> None: ...


class Watch(Protocol):
    """Announced releases (``watch.LeaseWatch``): calls ``on_release(holder)`` for each."""

    async def async_start(self, on_release: Callable[[str], None]) -> None: ...

    async def async_stop(self) -> None: ...


class Clock(Protocol):
    def now(self) -> float: ...

    async def wait(self, waits: Collection[asyncio.Future[Any]], until: float) -> None:
        """Return when one of ``waits`` is done, or at ``until``."""
        ...


class MonotonicClock:
    def now(self) -> float:
        return time.monotonic()

    async def wait(self, waits: Collection[asyncio.Future[Any]], until: float) -> None:
        timeout = max(0.0, until - self.now())
        if waits:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        else:
            await asyncio.sleep(timeout)


Blocking = Callable[..., Awaitable[Any]]


class LeaseKeeper:
    """The node's runtime, run only while this node holds the lease (a node service)."""

    def __init__(
        self,
        store: LeaseStorePort,
        runtime: RoutingRuntime,
        *,
        node: str,
        health: Any = None,
        times: LeaseTimes | None = None,
        clock: Clock | None = None,
        watch: Watch | None = None,
        blocking: Blocking = asyncio.to_thread,
        warm: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self.store = store
        self.runtime = runtime
        self.times = times or LeaseTimes()
        problems = self.times.problems()
        if problems:
            raise ValueError("; ".join(problems))
        # One holder per process: a restarted node waits for its old grant to lapse like
        # any other, so two processes given the same node name never share a lease.
        self.holder = f"{node}/{os.getpid()}/{uuid.uuid4().hex[:8]}"
        self.node = node
        self.health = health
        self.clock = clock or MonotonicClock()
        self.watch = watch
        self.blocking = blocking
        # Work the runtime's start would otherwise do cold (importing and compiling the
        # configuration's selections: about half a second), done once while standby.
        self.warm = warm
        self._warm_task: asyncio.Task[None] | None = None
        # What the keeper knows (``observe`` turns it into an Observation).
        self.token: int | None = None
        self.renewed_at = 0.0
        self.last: Reply | None = None
        self.fenced = False
        self.stopping = False
        self.notified = False
        self._runtime = Runtime.STOPPED
        self._runtime_error = ""
        self._start_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._settled = asyncio.Event()  # the first try answered (and a granted start ended)
        self._loop_task: asyncio.Task[None] | None = None
        self._situation: Why | None = None  # of the last decision logged above debug
        runtime.on_fenced = self._on_fenced
        self._set_active(False, "standby: waiting for the lease")

    @property
    def active(self) -> bool:
        """This node routes: it holds the lease and its runtime runs."""
        return self.token is not None and self._runtime is Runtime.RUNNING

    # --- service --------------------------------------------------------------------------

    async def async_start(self) -> None:
        """Start the cycles; returns once the first try is answered (a lone node is active
        when its start returns)."""
        if self.watch is not None:
            await self.watch.async_start(self._on_release)
        self._loop_task = asyncio.create_task(self._run(), name="ha-lease")
        settled = asyncio.ensure_future(self._settled.wait())
        try:
            await asyncio.wait({settled, self._loop_task}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            await asyncio.shield(self.async_stop())
            raise
        finally:
            settled.cancel()
        if self.warm is not None and self.token is None:
            self._warm_task = asyncio.create_task(self._warm_up(self.warm), name="ha-warm")

    async def async_stop(self) -> None:
        """An active node drains its runtime, then releases the lease; then the keeper ends."""
        self.stopping = True
        self._wake.set()
        if self._warm_task is not None:
            self._warm_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._warm_task
        task, self._loop_task = self._loop_task, None
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        else:  # never started, or stopped before: finish what is held here
            while (await self._cycle()).step is not Step.EXIT:
                pass
        if self.watch is not None:
            await self.watch.async_stop()

    def observe(self) -> Observation:
        return Observation(
            times=self.times,
            token=self.token,
            renewed_at=self.renewed_at,
            last=self.last,
            runtime=self._runtime,
            runtime_error=self._runtime_error,
            fenced=self.fenced,
            stopping=self.stopping,
            notified=self.notified,
        )

    # --- the cycle ------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                if (await self._cycle()).step is Step.EXIT:
                    return
            except asyncio.CancelledError:
                raise
            except Exception:  # the loop is what keeps the pair working: never let it end
                log.exception("lease keeper cycle failed node=%s", self.node)
                await self.clock.wait((), self.clock.now() + self.times.poll)

    async def _cycle(self) -> Action:
        self._wake.clear()  # whatever happens from here on makes the next wait short
        self._runtime_settled()
        now = self.clock.now()
        action, sentence = decide(self.observe(), now)
        self._say(action, sentence)
        await self._act(action, now, sentence)
        return action

    def _say(self, action: Action, sentence: str) -> None:
        why = action.why
        quiet = why.routine or why is self._situation
        if not why.routine:
            self._situation = why
        level = logging.DEBUG if quiet else why.level
        log.log(level, "ha node=%s action=%s: %s", self.node, action.step, sentence)

    async def _act(self, action: Action, now: float, sentence: str) -> None:
        step = action.step
        if step is Step.WAIT:
            wake = asyncio.ensure_future(self._wake.wait())
            try:
                await self.clock.wait({wake}, action.until)
            finally:
                wake.cancel()
        elif step is Step.ACQUIRE:
            await self._acquire(now)
        elif step is Step.START:
            self._start()
        elif step is Step.RENEW:
            await self._renew(now)
        elif step is Step.STEP_DOWN:
            await self._step_down(sentence)
        elif step is Step.RELEASE:
            await self._release(sentence)

    async def _acquire(self, now: float) -> None:
        self.notified = False
        try:
            got = await self._call(
                now + self.times.retry_timeout, self.store.acquire, self.holder, self.times.ttl
            )
        except Exception as exc:
            self.last = Reply(Answer.FAILED, now, error=_said(exc))
            self._settled.set()
            return
        if isinstance(got, Grant):
            self.last = Reply(Answer.GRANTED, now, got.token, got.previous)
            self.token, self.renewed_at, self.fenced = got.token, now, False
        else:
            self.last = Reply(Answer.HELD, now, got.token, got.holder, got.remaining)
            self._settled.set()

    def _start(self) -> None:
        assert self.token is not None
        before = node_of(self.last.holder) if self.last is not None else None
        self.runtime.fence = self.token
        self.runtime.failover_from = before if before not in (None, self.node) else None
        self._runtime, self._runtime_error = Runtime.STARTING, ""
        self._start_task = asyncio.create_task(self.runtime.async_start(), name="ha-runtime")
        self._start_task.add_done_callback(lambda _: self._wake.set())

    def _runtime_settled(self) -> None:
        """A runtime start that ended since the last cycle: running, or failed."""
        task = self._start_task
        if task is None or not task.done():
            return
        self._start_task = None
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._runtime, self._runtime_error = Runtime.FAILED, _said(exc)
        elif self.token is not None:
            self._runtime = Runtime.RUNNING
            self._set_active(True, f"active, lease token {self.token}")
        self._settled.set()

    async def _renew(self, now: float) -> None:
        assert self.token is not None
        until = min(now + self.times.retry_timeout, self.observe().deadline)
        try:
            kept = await self._call(
                until, self.store.renew, self.holder, self.token, self.times.ttl
            )
        except Exception as exc:
            self.last = Reply(Answer.FAILED, now, error=_said(exc))
            return
        if kept:
            self.last, self.renewed_at = Reply(Answer.RENEWED, now), now
        else:
            self.last = Reply(Answer.LOST, now)

    async def _step_down(self, detail: str) -> None:
        """Stop routing: health first (no new work is sent here), then the runtime."""
        self.token = None
        self._set_active(False, detail)
        start, self._start_task = self._start_task, None
        try:
            if start is not None and not start.done():
                start.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await start
            await self.runtime.async_stop()
        finally:
            self.runtime.fence = None
            self._runtime = Runtime.STOPPED
            self.last, self.fenced = None, False

    async def _release(self, sentence: str) -> None:
        token = self.token
        assert token is not None
        await self._step_down(sentence)
        now = self.clock.now()
        self.last = Reply(Answer.RELEASED, now)  # a standby waits a poll before trying again
        self._settled.set()
        try:
            released = await self._call(
                now + self.times.retry_timeout, self.store.release, self.holder, token
            )
        except Exception as exc:  # it lapses on its own
            log.warning(
                "lease release failed node=%s token=%d error=%s; it lapses within %g s",
                self.node,
                token,
                _said(exc),
                self.times.ttl,
            )
            return
        if released:
            log.info("lease released node=%s token=%d; the standby was told", self.node, token)

    async def _call(self, until: float, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a worker thread, given up at ``until``."""
        task = asyncio.ensure_future(self.blocking(fn, *args))
        await self.clock.wait({task}, until)
        if not task.done():
            task.add_done_callback(_ignore)  # the database gives it up too (statement_timeout)
            raise TimeoutError(f"no answer within {self.times.retry_timeout:g} s")
        result: T = task.result()
        return result

    async def _warm_up(self, warm: Callable[[], Awaitable[object]]) -> None:
        started = self.clock.now()
        try:
            await warm()
        except Exception as exc:  # the runtime's start does it again, and says what failed
            log.warning("standby warm-up failed node=%s error=%s", self.node, _said(exc))
            return
        log.info(
            "standby warmed up node=%s seconds=%.2f: a takeover starts the runtime warm",
            self.node,
            self.clock.now() - started,
        )

    # --- events -----------------------------------------------------------------------

    def _on_fenced(self) -> None:
        self.fenced = True
        self._wake.set()

    def _on_release(self, holder: str) -> None:
        if self.token is None and holder != self.holder:
            self.notified = True
            self._wake.set()

    def _set_active(self, active: bool, detail: str) -> None:
        if self.health is not None:
            self.health.active = active
            # expertline_component_up{component="lease"}: 1 on the active node, 0 on the standby
            self.health.report("lease", active, detail, required=False)


def _said(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _ignore(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()
