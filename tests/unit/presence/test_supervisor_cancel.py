"""A supervisor's stop is never lost: a cancel swallowed on the way (as ``asyncio.wait_for``
can on Python 3.11 when the awaited future completes at the same moment) is still honoured."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from expertline.presence.xmpp import raise_if_cancelling


async def test_a_swallowed_cancel_is_honoured_at_the_next_check() -> None:
    attempts = 0

    async def supervise() -> None:
        nonlocal attempts
        while True:
            raise_if_cancelling()
            attempts += 1
            with contextlib.suppress(asyncio.CancelledError):  # lost, as a connect may lose it
                await asyncio.sleep(10)

    task = asyncio.create_task(supervise())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 2)
    assert attempts == 1


async def test_outside_a_cancel_nothing_happens() -> None:
    raise_if_cancelling()
