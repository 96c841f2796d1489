"""The lease keeper driven on a fake clock, with the lease row kept in memory (the SQL itself
is tested against PostgreSQL in tests/integration/ha): who is active, when a node steps down,
and that the runtime runs exactly while its node holds the lease. No test sleeps: time moves
when the test advances the clock."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from expertline.ha.decide import LeaseTimes
from expertline.ha.keeper import LeaseKeeper
from expertline.ha.lease import Grant, Held
from expertline.health import Health
from support.clock import FakeClock

TIMES = LeaseTimes()  # the defaults: ttl 2, renew 0.5, retry_timeout 0.5, poll 0.5, margin 0.5


class MemoryLease:
    """The lease row, with ``LeaseStore``'s rules and the fake clock as the database's."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.holder: str | None = None
        self.token = 0
        self.expires = 0.0
        self.failing = False  # the database refuses connections
        self.hanging = False  # the database does not answer at all
        self.calls: list[tuple[float, str]] = []
        self.watches: list[Callable[[str], None]] = []  # LISTENing sessions

    def _reachable(self, what: str) -> None:
        self.calls.append((self.clock.now(), what))
        if self.failing:
            raise ConnectionError("connection refused")

    def acquire(self, holder: str, ttl: float) -> Grant | Held:
        self._reachable("acquire")
        now = self.clock.now()
        if self.expires > now:
            return Held(self.holder, self.token, self.expires - now)
        previous = self.holder
        self.holder, self.token, self.expires = holder, self.token + 1, now + ttl
        return Grant(self.token, previous)

    def renew(self, holder: str, token: int, ttl: float) -> bool:
        self._reachable("renew")
        if (self.holder, self.token) != (holder, token):
            return False
        self.expires = self.clock.now() + ttl
        return True

    def release(self, holder: str, token: int) -> bool:
        self._reachable("release")
        if (self.holder, self.token) != (holder, token):
            return False
        self.expires = self.clock.now()
        for notify in self.watches:
            notify(holder)
        return True

    def taken_by(self, holder: str, seconds: float = 60) -> None:
        """Another node holds the lease now, whatever this one believes."""
        self.holder, self.token, self.expires = holder, self.token + 1, self.clock.now() + seconds

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """The keeper's way to the database: inline, or never answering."""
        if self.hanging:
            await asyncio.Event().wait()
        return fn(*args)


class Watch:
    """The LISTEN connection: the memory lease calls every started watch on a release."""

    def __init__(self, lease: MemoryLease) -> None:
        self.lease = lease
        self.on_release: Callable[[str], None] | None = None

    async def async_start(self, on_release: Callable[[str], None]) -> None:
        self.on_release = on_release
        self.lease.watches.append(on_release)

    async def async_stop(self) -> None:
        if self.on_release in self.lease.watches:
            self.lease.watches.remove(self.on_release)


class Runtime:
    """Records when it runs and with which token; its start takes ``start_seconds``."""

    def __init__(self, clock: FakeClock, start_seconds: float = 0.0) -> None:
        self.clock = clock
        self.fence: int | None = None
        self.on_fenced: Callable[[], None] | None = None
        self.failover_from: str | None = None
        self.after: list[str | None] = []  # failover_from at each start
        self.running = False
        self.starts: list[int | None] = []
        self.start_seconds = start_seconds
        self.fail_start: Exception | None = None

    async def async_start(self) -> None:
        await self.clock.sleep(self.start_seconds)
        if self.fail_start is not None:
            raise self.fail_start
        self.running = True
        self.starts.append(self.fence)
        self.after.append(self.failover_from)

    async def async_stop(self) -> None:
        self.running = False


class Pair:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.lease = MemoryLease(self.clock)
        self.keepers: list[LeaseKeeper] = []

    def node(
        self, name: str, *, watch: bool = True, start_seconds: float = 0.0
    ) -> tuple[LeaseKeeper, Runtime, Health]:
        runtime, health = Runtime(self.clock, start_seconds), Health()
        keeper = LeaseKeeper(
            self.lease,
            runtime,
            node=name,
            health=health,
            times=TIMES,
            clock=self.clock,
            watch=Watch(self.lease) if watch else None,
            blocking=self.lease.call,
        )
        self.keepers.append(keeper)
        return keeper, runtime, health

    async def close(self) -> None:
        self.lease.failing = self.lease.hanging = False
        for keeper in self.keepers:
            stopping = asyncio.ensure_future(keeper.async_stop())
            while not stopping.done():
                await self.clock.advance(0.1)


@pytest.fixture
async def pair() -> Any:
    p = Pair()
    yield p
    await p.close()


def kill(pair: Pair, keeper: LeaseKeeper) -> None:
    """kill -9: the keeper's cycles end where they are; nothing is released, ever."""
    assert keeper._loop_task is not None
    keeper._loop_task.cancel()
    pair.keepers.remove(keeper)  # the fixture does not stop a dead process


@contextlib.contextmanager
def ha_log(caplog: pytest.LogCaptureFixture) -> Iterator[list[logging.LogRecord]]:
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="expertline.ha"):
        yield caplog.records  # other loggers' lines (component health) are left out below


async def test_a_lone_node_is_active_when_its_start_returns_and_renews_on_time(pair: Pair) -> None:
    a, run_a, health = pair.node("a")
    await a.async_start()
    assert a.active and run_a.running and health.active and run_a.starts == [1]
    t0 = pair.clock.now()
    await pair.clock.advance(2.0)
    renewals = [t - t0 for t, what in pair.lease.calls if what == "renew"]
    assert renewals == pytest.approx([0.5, 1.0, 1.5, 2.0])
    await a.async_stop()
    assert not run_a.running and not health.active and not a.active
    assert pair.lease.expires == pair.clock.now()  # released: the next node need not wait


async def test_the_standby_acquires_as_soon_as_the_killed_holders_grant_lapses(pair: Pair) -> None:
    a, _, _ = pair.node("a")
    b, run_b, health_b = pair.node("b")
    await a.async_start()
    await b.async_start()
    assert not b.active and not run_b.running and not health_b.active
    await pair.clock.advance(1.3)
    kill(pair, a)
    lapses = pair.lease.expires
    took = await pair.clock.until(lambda: b.active, limit=5)
    assert lapses <= pair.clock.now() <= lapses + 0.02  # acquired on the lapse, not a poll later
    assert took <= TIMES.ttl + 0.02
    assert run_b.starts == [2] and run_b.after == ["a"] and health_b.active


async def test_a_graceful_stop_wakes_the_standby_at_once(pair: Pair) -> None:
    a, run_a, _ = pair.node("a")
    b, run_b, _ = pair.node("b")
    await a.async_start()
    await b.async_start()
    stopping = asyncio.ensure_future(a.async_stop())
    await pair.clock.settle()  # no time passes
    assert stopping.done() and not run_a.running
    assert b.active and run_b.starts == [2] and run_b.after == ["a"]


async def test_without_the_notice_the_standby_takes_a_released_lease_at_its_next_poll(
    pair: Pair,
) -> None:
    a, _, _ = pair.node("a")
    b, _, _ = pair.node("b", watch=False)
    await a.async_start()
    await b.async_start()
    await pair.clock.advance(0.2)
    await a.async_stop()
    took = await pair.clock.until(lambda: b.active, limit=5)
    assert 0 < took <= TIMES.poll


async def test_a_holder_without_its_database_stops_routing_before_its_grant_can_end(
    pair: Pair, caplog: pytest.LogCaptureFixture
) -> None:
    a, run_a, health = pair.node("a")
    await a.async_start()
    await pair.clock.advance(0.5)  # renewed at t0 + 0.5
    renewed, granted_until = pair.clock.now(), pair.lease.expires
    with ha_log(caplog) as records:
        pair.lease.failing = True
        await pair.clock.until(lambda: not run_a.running, limit=5)
    assert pair.clock.now() == pytest.approx(renewed + TIMES.ttl - TIMES.margin)
    assert pair.clock.now() < granted_until and not a.active and not health.active
    tries = [t - renewed for t, what in pair.lease.calls if what == "renew" and t > renewed]
    assert tries == pytest.approx([0.5, 1.0])  # two attempts, then it gives up
    said = [(r.levelname, r.getMessage()) for r in records if r.levelno >= logging.INFO]
    assert (
        said[0][0] == "WARNING" and "renewing lease token 1 failed (ConnectionError" in said[0][1]
    )
    assert (
        said[1][0] == "WARNING" and "action=step-down: stepping down: lease token 1" in said[1][1]
    )
    # The database is back: the lapsed lease is taken again, by the same node.
    pair.lease.failing = False
    await pair.clock.until(lambda: a.active, limit=5)
    assert run_a.starts == [1, 2] and run_a.after == [None, None]  # no failover notice


async def test_a_renewal_that_gets_no_answer_is_given_up_in_time(pair: Pair) -> None:
    a, run_a, _ = pair.node("a")
    await a.async_start()
    started = pair.clock.now()
    pair.lease.hanging = True
    await pair.clock.until(lambda: not run_a.running, limit=5)
    assert pair.clock.now() - started == pytest.approx(TIMES.ttl - TIMES.margin)


async def test_a_standby_without_its_database_warns_once_and_keeps_polling(
    pair: Pair, caplog: pytest.LogCaptureFixture
) -> None:
    a, _, _ = pair.node("a")
    b, run_b, _ = pair.node("b")
    await a.async_start()
    await b.async_start()
    with ha_log(caplog) as records:
        pair.lease.failing = True
        kill(pair, a)
        since = pair.clock.now()
        await pair.clock.advance(3.0)
        tries = [t for t, what in pair.lease.calls if what == "acquire" and t > since]
        assert len(tries) == pytest.approx(3.0 / TIMES.poll, abs=1)
        loud = [r.getMessage() for r in records if r.levelno >= logging.INFO]
        assert len(loud) == 1 and "standby: the database did not answer" in loud[0]
        pair.lease.failing = False
        await pair.clock.until(lambda: b.active, limit=5)
    assert run_b.starts == [2]


async def test_a_fenced_commit_makes_the_node_step_down_at_once(pair: Pair) -> None:
    a, run_a, _ = pair.node("a")
    await a.async_start()
    assert run_a.on_fenced is not None
    pair.lease.taken_by("b")
    run_a.on_fenced()  # what the runtime does when a commit finds the token stale
    await pair.clock.settle()  # no time passes
    assert not run_a.running and not a.active and a.token is None


async def test_a_node_whose_lease_was_taken_steps_down_at_its_next_renewal(pair: Pair) -> None:
    a, run_a, _ = pair.node("a")
    await a.async_start()
    pair.lease.taken_by("b")  # e.g. this node was paused longer than the lease lasts
    took = await pair.clock.until(lambda: not run_a.running, limit=5)
    assert took <= TIMES.renew + 0.01 and a.token is None


async def test_a_start_longer_than_the_lease_keeps_the_lease(pair: Pair) -> None:
    a, run_a, _ = pair.node("a", start_seconds=3 * TIMES.ttl)
    b, run_b, _ = pair.node("b")
    starting = asyncio.ensure_future(a.async_start())
    await pair.clock.settle()
    await b.async_start()
    assert a.token == 1 and not a.active  # holding, not routing yet
    await pair.clock.until(starting.done, limit=10)
    assert a.active and run_a.running and run_a.starts == [1]
    assert not b.active and not run_b.running and pair.lease.holder == a.holder


async def test_a_node_stopped_while_its_runtime_starts_leaves_it_stopped(pair: Pair) -> None:
    a, runtime, _ = pair.node("a", start_seconds=60)
    starting = asyncio.ensure_future(a.async_start())
    await pair.clock.advance(1.0)
    assert a.token == 1
    starting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await starting
    await a.async_stop()
    assert not runtime.running and runtime.starts == []
    assert pair.lease.expires <= pair.clock.now()  # released


async def test_a_runtime_that_does_not_start_gives_the_lease_back_and_is_tried_again(
    pair: Pair,
) -> None:
    a, runtime, health = pair.node("a")
    runtime.fail_start = RuntimeError("configuration unreadable")
    await a.async_start()
    assert not a.active and not health.active and a.token is None
    assert pair.lease.expires <= pair.clock.now()  # released for another node
    runtime.fail_start = None
    took = await pair.clock.until(lambda: a.active, limit=5)
    assert took == pytest.approx(TIMES.poll, abs=0.011)
    assert runtime.starts == [2]


async def test_only_one_of_many_nodes_runs_at_any_time(pair: Pair) -> None:
    nodes = [pair.node(f"n{i}") for i in range(4)]
    for k, _, _ in nodes:
        await k.async_start()
    for _ in range(3):  # the active one stops; another takes over
        running = [k for k, r, _ in nodes if r.running]
        assert len(running) == 1
        await running[0].async_stop()
        nodes = [n for n in nodes if n[0] is not running[0]]
        await pair.clock.until(lambda n=nodes: sum(r.running for _, r, _ in n) == 1, limit=5)
        await pair.clock.advance(1.0)
        assert sum(r.running for _, r, _ in nodes) == 1
    assert [t for _, r, _ in nodes for t in r.starts] == [4]


async def test_a_steady_pair_logs_its_situation_once(
    pair: Pair, caplog: pytest.LogCaptureFixture
) -> None:
    with ha_log(caplog) as records:
        a, _, _ = pair.node("a")
        b, _, _ = pair.node("b")
        await a.async_start()
        await b.async_start()
        await pair.clock.advance(30.0)
    ha = [r for r in records if r.name.startswith("expertline.ha")]
    loud = [r.getMessage() for r in ha if r.levelno >= logging.INFO]
    assert [m.split(":", 1)[0] for m in loud] == [
        "ha node=a action=start",
        "ha node=a action=wait",
        "ha node=a action=wait",
        "ha node=b action=wait",
    ]
    assert "acquired lease token 1: it had lapsed; starting the runtime" in loud[0]
    assert "holding lease token 1 while the runtime starts" in loud[1]
    assert "active: holding lease token 1" in loud[2]
    assert "standby: a holds lease token 1" in loud[3]
    quiet = [r for r in ha if r.levelno == logging.DEBUG]
    assert len(quiet) > 200  # every cycle said, at debug


async def test_a_standby_warms_up_once_and_an_active_node_does_not(
    pair: Pair, caplog: pytest.LogCaptureFixture
) -> None:
    warmed: list[str] = []

    def warm(name: str, fail: bool = False) -> Callable[[], Any]:
        async def run() -> None:
            await pair.clock.sleep(0.4)  # e.g. compiling the configuration's selections
            if fail:
                raise RuntimeError("no configuration")
            warmed.append(name)

        return run

    a, _, _ = pair.node("a")
    b, _, _ = pair.node("b")
    c, _, _ = pair.node("c")
    a.warm, b.warm, c.warm = warm("a"), warm("b"), warm("c", fail=True)
    with ha_log(caplog) as records:
        await a.async_start()
        await b.async_start()
        await c.async_start()
        await pair.clock.advance(5.0)
    assert warmed == ["b"]
    said = [
        r.getMessage() for r in records if r.levelno >= logging.INFO and "warm" in r.getMessage()
    ]
    assert said == [
        "standby warmed up node=b seconds=0.40: a takeover starts the runtime warm",
        "standby warm-up failed node=c error=RuntimeError: no configuration",
    ]
