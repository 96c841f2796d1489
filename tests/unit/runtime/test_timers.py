from __future__ import annotations

import asyncio

from expertline.runtime.timers import TimerHeap, async_run
from support.wait import async_eventually


def test_timers_fire_in_due_order_and_only_when_due() -> None:
    timers = TimerHeap()
    timers.set("b", 20.0)
    timers.set("a", 10.0)
    timers.set("c", 30.0)
    assert timers.next_due() == 10.0
    assert timers.pop_due(5.0) == []
    assert timers.pop_due(20.0) == ["a", "b"]
    assert timers.pop_due(100.0) == ["c"]
    assert timers.next_due() is None
    assert len(timers) == 0


def test_setting_a_key_again_moves_it_and_cancel_removes_it() -> None:
    timers = TimerHeap()
    timers.set("offer:1", 10.0)
    timers.set("offer:1", 50.0)
    timers.set("offer:2", 11.0)
    timers.cancel("offer:2")
    assert timers.pop_due(20.0) == []
    assert timers.due_at("offer:1") == 50.0
    assert timers.pop_due(50.0) == ["offer:1"]


def test_heap_memory_stays_bounded_when_timers_move_often() -> None:
    timers = TimerHeap()
    for i in range(10_000):
        timers.set("k", float(i))
    assert len(timers) == 1
    assert len(timers._heap) <= 130
    assert timers.pop_due(1e9) == ["k"]


def test_pop_due_respects_its_limit() -> None:
    timers = TimerHeap()
    for i in range(10):
        timers.set(f"k{i}", 1.0)
    assert len(timers.pop_due(2.0, limit=4)) == 4
    assert len(timers) == 6


async def test_the_timer_loop_hands_due_keys_in_order_and_looks_again_when_woken() -> None:
    heap, wake, now = TimerHeap(), asyncio.Event(), [100.0]
    heap.set("b", 90.0)
    heap.set("a", 80.0)
    heap.set("later", 200.0)
    fired: list[str] = []
    loop = asyncio.create_task(async_run(heap, wake, lambda: now[0], fired.append))
    try:
        await async_eventually(lambda: fired == ["a", "b"])
        now[0] = 300.0  # a fake clock moved: nothing fires until the loop looks again
        heap.set("c", 250.0)
        wake.set()  # at once, not at the loop's next look a second later
        await async_eventually(lambda: fired == ["a", "b", "later", "c"], timeout=0.8)
    finally:
        loop.cancel()
