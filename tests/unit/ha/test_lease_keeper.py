"""The lease keeper's decisions, with the lease row kept in memory (the SQL itself is tested
against PostgreSQL in tests/integration/ha): who is active, when a node steps down, and
that the runtime runs exactly while its node holds the lease."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable

from expertline.ha.lease import LeaseKeeper, LeaseTimes
from expertline.health import Health
from support.wait import async_eventually

TIMES = LeaseTimes(ttl=0.6, poll=0.05, margin=0.1)


class MemoryLease:
    """The lease row, with ``LeaseStore``'s rules and this process's clock as the database's."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.holder: str | None = None
        self.token = 0
        self.expires = 0.0
        self.failing = False  # the database cannot be reached

    def _reachable(self) -> None:
        if self.failing:
            raise ConnectionError("database unreachable")

    def acquire(self, holder: str, ttl: float) -> tuple[int, str | None] | None:
        self._reachable()
        with self.lock:
            if self.expires > time.monotonic():
                return None
            previous = self.holder
            self.holder, self.token = holder, self.token + 1
            self.expires = time.monotonic() + ttl
            return self.token, previous

    def renew(self, holder: str, token: int, ttl: float) -> bool:
        self._reachable()
        with self.lock:
            if (self.holder, self.token) != (holder, token):
                return False
            self.expires = time.monotonic() + ttl
            return True

    def taken_by(self, holder: str, seconds: float = 60) -> None:
        """Another node holds the lease now, whatever this one believes."""
        with self.lock:
            self.holder, self.token = holder, self.token + 1
            self.expires = time.monotonic() + seconds

    def release(self, holder: str, token: int) -> None:
        self._reachable()
        with self.lock:
            if (self.holder, self.token) == (holder, token):
                self.expires = time.monotonic()


class Runtime:
    """Records when it runs and with which token."""

    def __init__(self, start_seconds: float = 0.0) -> None:
        self.fence: int | None = None
        self.on_fenced: Callable[[], None] | None = None
        self.failover_from: str | None = None
        self.after: list[str | None] = []  # failover_from at each start
        self.running = False
        self.starts: list[int | None] = []
        self.start_seconds = start_seconds  # loading configuration and tasks in flight

    async def async_start(self) -> None:
        await asyncio.sleep(self.start_seconds)
        self.running = True
        self.starts.append(self.fence)
        self.after.append(self.failover_from)

    async def async_stop(self) -> None:
        self.running = False


def keeper(lease: MemoryLease, name: str) -> tuple[LeaseKeeper, Runtime, Health]:
    runtime, health = Runtime(), Health()
    return LeaseKeeper(lease, runtime, node=name, health=health, times=TIMES), runtime, health


async def test_a_lone_node_is_active_when_its_start_returns() -> None:
    lease = MemoryLease()
    k, runtime, health = keeper(lease, "a")
    await k.async_start()
    try:
        assert k.active and runtime.running and health.active
        assert runtime.starts == [1] and lease.holder == k.holder
    finally:
        await k.async_stop()
    assert not runtime.running and not health.active
    assert lease.expires <= time.monotonic()  # released: the next node need not wait


async def test_the_standby_takes_over_a_graceful_stop_at_its_next_poll() -> None:
    lease = MemoryLease()
    a, run_a, _ = keeper(lease, "a")
    b, run_b, health_b = keeper(lease, "b")
    await a.async_start()
    await b.async_start()
    try:
        assert a.active and not b.active and not run_b.running and not health_b.active
        await a.async_stop()
        await async_eventually(lambda: b.active and run_b.running, timeout=TIMES.ttl / 2)
        assert run_b.starts == [2] and health_b.active and not run_a.running
        assert run_b.after == ["a"]  # b's runtime tells the experts routing moved
    finally:
        await b.async_stop()


async def test_a_node_that_cannot_renew_stops_before_its_grant_ends() -> None:
    lease = MemoryLease()
    a, run_a, health = keeper(lease, "a")
    await a.async_start()
    try:
        lease.failing = True
        granted_until = lease.expires
        await async_eventually(lambda: not run_a.running, timeout=2 * TIMES.ttl)
        assert time.monotonic() < granted_until  # stopped while its lease still stood
        assert not a.active and not health.active
        lease.failing = False  # the database is back: the lapsed lease is taken again
        await async_eventually(lambda: run_a.running, timeout=2 * TIMES.ttl)
        assert run_a.starts == [1, 2]
        assert run_a.after == [None, None]  # the same node again: no failover notice
    finally:
        await a.async_stop()


async def test_a_node_whose_lease_was_taken_steps_down() -> None:
    lease = MemoryLease()
    a, run_a, _ = keeper(lease, "a")
    await a.async_start()
    try:
        lease.taken_by("b")  # e.g. this node was paused longer than the lease lasts
        await async_eventually(lambda: not run_a.running, timeout=2 * TIMES.ttl)
        assert not a.active and a.token is None
    finally:
        await a.async_stop()


async def test_a_fenced_commit_makes_the_node_step_down_at_once() -> None:
    lease = MemoryLease()
    a, run_a, _ = keeper(lease, "a")
    await a.async_start()
    try:
        assert run_a.on_fenced is not None
        lease.taken_by("b")
        run_a.on_fenced()  # what the runtime does when a commit finds the token stale
        await async_eventually(lambda: not run_a.running, timeout=TIMES.renew_every / 2)
    finally:
        await a.async_stop()


async def test_only_one_of_many_nodes_runs_at_any_time() -> None:
    lease = MemoryLease()
    nodes = [keeper(lease, f"n{i}") for i in range(4)]
    for k, _, _ in nodes:
        await k.async_start()
    try:
        for _ in range(3):  # the active one stops; another takes over
            running = [k for k, r, _ in nodes if r.running]
            assert len(running) == 1
            await running[0].async_stop()
            nodes = [n for n in nodes if n[0] is not running[0]]
            await async_eventually(lambda n=nodes: sum(r.running for _, r, _ in n) == 1, timeout=2)
        tokens = [t for _, r, _ in nodes for t in r.starts]
        assert tokens == [4]
    finally:
        for k, _, _ in nodes:
            await k.async_stop()


async def test_a_start_longer_than_the_lease_keeps_the_lease() -> None:
    lease = MemoryLease()
    a = LeaseKeeper(lease, Runtime(start_seconds=3 * TIMES.ttl), node="a", times=TIMES)
    b, run_b, _ = keeper(lease, "b")
    starting = asyncio.create_task(a.async_start())
    await async_eventually(lambda: a.token == 1)
    await b.async_start()
    try:
        await starting
        assert a.active and a.runtime.running  # type: ignore[attr-defined]
        assert not b.active and not run_b.running and lease.holder == a.holder
    finally:
        await b.async_stop()
        await a.async_stop()


async def test_a_node_stopped_while_its_runtime_starts_leaves_it_stopped() -> None:
    lease = MemoryLease()
    runtime = Runtime(start_seconds=60)
    a = LeaseKeeper(lease, runtime, node="a", times=TIMES)
    starting = asyncio.create_task(a.async_start())
    await async_eventually(lambda: a.token == 1)
    starting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await starting
    await a.async_stop()
    assert not runtime.running and runtime.starts == []
    assert lease.expires <= time.monotonic()  # released
