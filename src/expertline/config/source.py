"""The configuration in effect on a node: one reader of the stored configuration, one
subscription that every part follows.

A node runs one ``ConfigSource``. It loads the stored document (and, where the node routes,
builds the routing core's view of it, keeping the eligibility index between versions so a new
version re-evaluates only what changed), then looks for a newer version every ``poll``
seconds, or at once when a part of this node has just applied one (``poke``). Parts never read
the configuration tables themselves: the runtime, the presence sources, the SIP front and the
web pages ask ``current()`` and wait with ``async_wait_config(after)``.

A standby builds each version too, so taking over does not pay for compiling selections. A
version that fails to load or build is logged and skipped (the one in effect stays); the next
poll tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from sqlalchemy import Engine

from expertline.config.snapshot import EMPTY, ConfigSnapshot, empty_routing
from expertline.config.store import current_version, load_document
from expertline.eligibility import EligibilityIndex
from expertline.eligibility.build import build_routing_config

log = logging.getLogger("expertline.config")

POLL_S = 1.0


class Builder:
    """Loads the stored version and builds its routing view (a function of the database, run
    in a worker thread); keeps the eligibility index from one version to the next."""

    def __init__(self, engine: Engine, *, routing: bool = True) -> None:
        self.engine = engine
        self.routing = routing
        self._index: EligibilityIndex | None = None

    def version(self) -> int:
        return int(current_version(self.engine))

    def __call__(self) -> ConfigSnapshot:
        version, doc = load_document(self.engine)
        if version == 0:
            return ConfigSnapshot(0, doc, empty_routing())
        if not self.routing:
            return ConfigSnapshot(int(version), doc, empty_routing(int(version)))
        if self._index is None:
            self._index = EligibilityIndex.from_document(doc)
        return ConfigSnapshot(
            int(version), doc, build_routing_config(doc, int(version), self._index)
        )


class ConfigSource:
    """The node's configuration subscription (``ConfigPort``)."""

    def __init__(
        self,
        engine: Engine,
        *,
        routing: bool = True,
        poll: float = POLL_S,
        builder: Callable[[], ConfigSnapshot] | None = None,
        probe: Callable[[], int] | None = None,
    ) -> None:
        default = Builder(engine, routing=routing)
        self._build = builder or default
        self._probe = probe or default.version
        self._poll = poll
        self._current = EMPTY
        self._changed = asyncio.Condition()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    # --- what parts ask -----------------------------------------------------------------

    def current(self) -> ConfigSnapshot:
        return self._current

    @property
    def version(self) -> int:
        return self._current.version

    async def async_wait_config(self, after: int, timeout: float | None = None) -> ConfigSnapshot:
        """The snapshot in effect once its version differs from ``after`` (a restore may move
        it back), or the current one when ``timeout`` passes first."""
        if self._current.version != after:
            return self._current
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self._current.version != after), timeout
                )
        return self._current

    def poke(self) -> None:
        """Look for a new version now (a part of this node has just applied one)."""
        self._wake.set()

    # --- lifecycle ----------------------------------------------------------------------

    async def async_start(self) -> None:
        """Load the version in effect (a failure here fails the node's start)."""
        if self._task is not None:
            return
        started = time.perf_counter()
        await self._publish(await asyncio.to_thread(self._build))
        log.info(
            "configuration loaded version=%d seconds=%.2f",
            self._current.version,
            time.perf_counter() - started,
        )
        self._task = asyncio.create_task(self._follow(), name="config-source")

    async def async_stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def async_refresh(self) -> ConfigSnapshot:
        """Load a newer version if there is one; the snapshot in effect afterwards."""
        version = await asyncio.to_thread(self._probe)
        if version != self._current.version:
            snapshot = await asyncio.to_thread(self._build)
            if snapshot.version != self._current.version:
                previous = self._current.version
                await self._publish(snapshot)
                log.info("configuration version=%d previous=%d", snapshot.version, previous)
        return self._current

    async def _follow(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll)
            self._wake.clear()
            try:
                await self.async_refresh()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self._failing:  # once per outage, then quiet until it works again
                    log.warning(
                        "configuration not read error=%s; version=%d stays in effect",
                        type(exc).__name__,
                        self._current.version,
                    )
                self._failing = True
            else:
                if self._failing:
                    log.info("configuration read again version=%d", self._current.version)
                self._failing = False

    async def _publish(self, snapshot: ConfigSnapshot) -> None:
        async with self._changed:
            self._current = snapshot
            self._changed.notify_all()
