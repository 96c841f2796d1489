"""Bounded waiting instead of sleeps."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(check: Callable[[], T], timeout: float = 10.0, interval: float = 0.02) -> T:
    """Call ``check`` until it returns a truthy value without raising; return that value.

    AssertionErrors and other exceptions are retried until ``timeout``; the last one is raised.
    """
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = check()
            if value:
                return value
            last = AssertionError(f"condition still false: {value!r}")
        except Exception as exc:  # retried until the deadline
            last = exc
        if time.monotonic() >= deadline:
            assert last is not None
            raise last
        time.sleep(interval)


async def async_eventually(
    check: Callable[[], Awaitable[T] | T], timeout: float = 10.0, interval: float = 0.02
) -> T:
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = check()
            if asyncio.iscoroutine(value) or isinstance(value, Awaitable):
                value = await value  # type: ignore[misc]
            if value:
                return value  # type: ignore[return-value]
            last = AssertionError(f"condition still false: {value!r}")
        except Exception as exc:
            last = exc
        if time.monotonic() >= deadline:
            assert last is not None
            raise last
        await asyncio.sleep(interval)
