"""Announced lease releases: ``LISTEN expertline_lease`` on a connection of its own.

A node that stops gracefully releases the lease and sends ``NOTIFY expertline_lease`` in the
same transaction (``lease.LeaseStore.release``); the standby's keeper is woken here and takes
the lease at once instead of at its next poll. The connection is outside the pool (a
listening session must stay open) and goes to the primary like every other (a multi-host URL
with ``target_session_attrs=read-write``). Every wait is bounded: notifications are awaited
``check_every`` seconds at a time, then the connection must answer a ``SELECT 1``; a lost
connection is made again with capped, jittered backoff. Meanwhile the standby still polls,
so this only ever makes a handover faster.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import Engine

from expertline.db.engine import connect_params
from expertline.ha.lease import CHANNEL

log = logging.getLogger("expertline.ha")

APPLICATION = "expertline lease watch"


class LeaseWatch:
    def __init__(
        self,
        params: dict[str, Any],
        *,
        channel: str = CHANNEL,
        check_every: float = 5.0,
        backoff: tuple[float, float] = (0.5, 10.0),
    ) -> None:
        self.params = params
        self.channel = channel
        self.check_every = check_every
        self.backoff = backoff
        self.listening = False
        self.notices = 0
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def for_engine(cls, engine: Engine) -> LeaseWatch:
        """Connects as the engine does; ``pg_stat_activity`` shows it as ``APPLICATION``."""
        return cls({"application_name": APPLICATION, **connect_params(engine)})

    async def async_start(self, on_release: Callable[[str], None]) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(on_release), name="ha-lease-watch")

    async def async_stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.listening = False

    async def _run(self, on_release: Callable[[str], None]) -> None:
        delay, failing = self.backoff[0], False
        while True:
            try:
                await self._listen(on_release, again=failing)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.listening:  # it worked until now: a new outage
                    delay, failing = self.backoff[0], False
                self.listening = False
                pause = delay * random.uniform(0.8, 1.2)
                log.log(
                    logging.DEBUG if failing else logging.WARNING,
                    "lease release notices interrupted error=%s; the standby relies on its "
                    "poll, listening again in %.1f s",
                    " ".join(str(exc).split())[:200] or type(exc).__name__,
                    pause,
                )
                failing = True
                await asyncio.sleep(pause)
                delay = min(delay * 2, self.backoff[1])

    async def _listen(self, on_release: Callable[[str], None], again: bool) -> None:
        connect = psycopg.AsyncConnection.connect(autocommit=True, **self.params)
        conn = await asyncio.wait_for(connect, timeout=self.check_every + 10)
        async with conn:
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
            self.listening = True
            log.log(
                logging.INFO if again else logging.DEBUG,
                "listening for lease releases channel=%s host=%s port=%s",
                self.channel,
                conn.info.host,
                conn.info.port,
            )
            while True:
                async for notice in conn.notifies(timeout=self.check_every):
                    self.notices += 1
                    on_release(notice.payload)
                await asyncio.wait_for(conn.execute("SELECT 1"), timeout=self.check_every)
