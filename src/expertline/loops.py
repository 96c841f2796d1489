"""The event loop a node and its benchmarks run on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop a node runs on: uvloop when it is installed (it comes with
    ``uvicorn[standard]``), else asyncio's own. Benchmarks use the same."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory
