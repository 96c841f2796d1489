"""The runtime lease (SPEC §8): which node of a pair is active, with a fencing token.

Two runtime nodes share a PostgreSQL database. The one that holds the lease row
(``ha_lease``, name ``runtime``) runs the routing runtime; the other waits, with its presence
sources connected and its SIP front answering 503, and takes the lease once it lapses.

- **Time is the database's.** Acquiring and renewing set ``expires_at = now() + ttl`` with
  the database's clock, so the nodes' clocks never need to agree.
- **Each acquisition is a new token** (the previous one plus one). Every batch the runtime
  commits checks, in its own transaction and under a share lock on the lease row, that its
  token is still the lease's: a node that lost the lease (paused, partitioned, too slow to
  renew) cannot commit anything after the other node took over (``Fenced``). The share lock
  makes the takeover wait for a commit already under way, so each batch is either committed
  before the new node reads the state, or refused.
- **The holder stops on its own first.** A renewal sent at local time ``t`` that succeeds
  moves the lease's end past ``t + ttl``, so an active node that could not renew steps down
  at ``t + ttl - margin`` by its own monotonic clock, before any other node can acquire.
- **A graceful stop hands over at once**: the runtime drains and commits, then the lease is
  released (expired now) and the standby takes it at its next poll.

``LeaseStore`` is the SQL; ``LeaseKeeper`` the node's service that acquires, renews, starts
and stops the runtime, and reports ``active`` to the node's health.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, text

log = logging.getLogger("expertline.ha")

LEASE = "runtime"


class Fenced(Exception):
    """A commit carried a lease token that is no longer the lease's: another node is active."""

    def __init__(self, token: int, current: int | None, holder: str | None) -> None:
        super().__init__(
            f"lease token {token} is stale: the lease is at token {current} held by {holder}"
        )
        self.token = token


@dataclass(frozen=True)
class LeaseState:
    holder: str | None
    token: int
    remaining: float  # seconds until it lapses (negative: lapsed)


class LeaseStore:
    """The lease row on PostgreSQL. Every call is one short transaction."""

    def __init__(self, engine: Engine, name: str = LEASE) -> None:
        self.engine = engine
        self.name = name

    def acquire(self, holder: str, ttl: float) -> tuple[int, str | None] | None:
        """Take the lease if it has lapsed; returns the new token and the previous holder, or
        None."""
        with self.engine.begin() as conn:
            row = conn.execute(
                text(
                    "UPDATE ha_lease AS lease SET holder = :holder, token = lease.token + 1, "
                    "expires_at = now() + make_interval(secs => :ttl), acquired_at = now() "
                    "FROM (SELECT name, holder FROM ha_lease WHERE name = :name) AS previous "
                    "WHERE lease.name = previous.name AND lease.expires_at <= now() "
                    "RETURNING lease.token, previous.holder"
                ),
                {"holder": holder, "ttl": ttl, "name": self.name},
            ).first()
        return None if row is None else (int(row[0]), row[1])

    def renew(self, holder: str, token: int, ttl: float) -> bool:
        """Extend the lease still held with ``token``; False when it was lost."""
        with self.engine.begin() as conn:
            row = conn.execute(
                text(
                    "UPDATE ha_lease SET expires_at = now() + make_interval(secs => :ttl) "
                    "WHERE name = :name AND holder = :holder AND token = :token RETURNING 1"
                ),
                {"holder": holder, "token": token, "ttl": ttl, "name": self.name},
            ).first()
        return row is not None

    def release(self, holder: str, token: int) -> None:
        """Let the lease lapse now, if it is still ours (a graceful stop)."""
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    "UPDATE ha_lease SET expires_at = now() "
                    "WHERE name = :name AND holder = :holder AND token = :token"
                ),
                {"holder": holder, "token": token, "name": self.name},
            )

    def state(self) -> LeaseState:
        with self.engine.connect() as conn:
            holder, token, remaining = conn.execute(
                text(
                    "SELECT holder, token, extract(epoch FROM expires_at - now()) "
                    "FROM ha_lease WHERE name = :name"
                ),
                {"name": self.name},
            ).one()
        return LeaseState(holder, int(token), float(remaining))


def check_fence(conn: Connection, token: int, name: str = LEASE) -> None:
    """Inside a write transaction: raise Fenced unless ``token`` is the lease's current one.
    The share lock holds off a takeover until this transaction ends."""
    row = conn.execute(
        text("SELECT token, holder FROM ha_lease WHERE name = :name FOR SHARE"), {"name": name}
    ).first()
    if row is None or int(row[0]) != token:
        raise Fenced(token, None if row is None else int(row[0]), None if row is None else row[1])


class Runtime(Protocol):
    """What the keeper drives: the routing runtime of this node."""

    fence: int | None
    on_fenced: Callable[[], None] | None
    failover_from: str | None

    async def async_start(self) -> None: ...

    async def async_stop(self) -> None: ...


@dataclass(frozen=True)
class LeaseTimes:
    """``ttl``: how long a grant lasts; renewals every ``ttl / 3``; a standby tries every
    ``poll``; an active node that could not renew steps down ``margin`` before its grant ends."""

    ttl: float = 10.0
    poll: float = 1.0
    margin: float = 1.0

    @property
    def renew_every(self) -> float:
        return self.ttl / 3


class LeaseKeeper:
    """The node's runtime, run only while this node holds the lease (a node service)."""

    def __init__(
        self,
        store: Any,
        runtime: Runtime,
        *,
        node: str,
        health: Any = None,
        times: LeaseTimes | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.runtime = runtime
        self.times = times or LeaseTimes()
        # One holder per process: a restarted node waits for its old grant to lapse like
        # any other, so two processes given the same node name never share a lease.
        self.holder = f"{node}/{os.getpid()}/{uuid.uuid4().hex[:8]}"
        self.node = node
        self.health = health
        self.monotonic = monotonic
        self.token: int | None = None
        self.deadline = 0.0  # local monotonic time by which the grant must be renewed
        self._fenced = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        runtime.on_fenced = self._fenced.set
        self._set_active(False, "standby: waiting for the lease")

    @property
    def active(self) -> bool:
        return self.token is not None

    async def async_start(self) -> None:
        """Try once (a lone node is active when its start returns), then keep at it."""
        await self._try_acquire()
        self._loop_task = asyncio.create_task(self._loop(), name="ha-lease")

    async def async_stop(self) -> None:
        """Stop the loop; an active node drains its runtime, then releases the lease."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None
        token = self.token
        await self._step_down("node stopping", logging.INFO)
        if token is not None:
            try:
                await asyncio.to_thread(self.store.release, self.holder, token)
                log.info("lease released node=%s token=%d", self.node, token)
            except Exception as exc:  # it lapses on its own
                log.warning("lease release failed node=%s error=%r", self.node, exc)

    async def _loop(self) -> None:
        while True:
            try:
                if self.active:
                    await self._hold()
                else:
                    await asyncio.sleep(self.times.poll)
                    await self._try_acquire()
            except Exception:  # the loop is what keeps the pair working: never let it end
                log.exception("lease loop error node=%s", self.node)
                await asyncio.sleep(self.times.poll)

    async def _hold(self) -> None:
        """Wait for the next renewal (or a refused commit), then renew or step down."""
        wait = min(self.times.renew_every, self.deadline - self.monotonic())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._fenced.wait(), timeout=max(0.0, wait))
        if self._fenced.is_set():
            await self._step_down("fenced: another node holds the lease")
            return
        reason = await self._renew()
        if reason is not None:
            await self._step_down(reason)

    async def _try_acquire(self) -> None:
        sent = self.monotonic()
        try:
            grant = await asyncio.to_thread(self.store.acquire, self.holder, self.times.ttl)
        except Exception as exc:
            log.warning("lease acquire failed node=%s error=%r", self.node, exc)
            return
        if grant is None:
            return
        token, previous = grant
        self.deadline = sent + self.times.ttl - self.times.margin
        self.token = token
        self._fenced.clear()
        self.runtime.fence = token
        before = previous.split("/", 1)[0] if previous else None  # holders are node/pid/nonce
        self.runtime.failover_from = before if before not in (None, self.node) else None
        log.info(
            "lease acquired node=%s token=%d previous=%s; starting the runtime",
            self.node,
            token,
            before or "-",
        )
        try:
            await self._start_runtime()
        except Exception as exc:
            log.error("runtime not started on lease node=%s token=%d: %s", self.node, token, exc)
            self.token = None
            self.runtime.fence = None
            with contextlib.suppress(Exception):
                await self.runtime.async_stop()
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.store.release, self.holder, token)
            return
        self._set_active(True, f"active, lease token {token}")

    async def _start_runtime(self) -> None:
        """Start the runtime, renewing the lease meanwhile (loading a large configuration and
        every task in flight may take longer than a grant)."""
        starting = asyncio.create_task(self.runtime.async_start(), name="ha-runtime-start")
        try:
            while not starting.done():
                wait = min(self.times.renew_every, self.deadline - self.monotonic())
                await asyncio.wait({starting}, timeout=max(0.0, wait))
                if not starting.done() and (reason := await self._renew()) is not None:
                    raise RuntimeError(reason)
            starting.result()
        finally:
            if not starting.done():
                starting.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await starting

    async def _renew(self) -> str | None:
        """Renew the grant once; returns why this node must step down, or None."""
        assert self.token is not None
        sent = self.monotonic()
        try:
            kept = await asyncio.wait_for(
                asyncio.to_thread(self.store.renew, self.holder, self.token, self.times.ttl),
                timeout=max(0.1, self.deadline - sent),
            )
        except Exception as exc:
            if self.monotonic() >= self.deadline:
                return f"lease not renewed in time ({exc!r})"
            log.warning("lease renewal failed node=%s error=%r; retrying", self.node, exc)
            await asyncio.sleep(min(self.times.poll, max(0.0, self.deadline - self.monotonic())))
            return None
        if not kept:
            return "lease lost: another node holds it"
        self.deadline = sent + self.times.ttl - self.times.margin
        return None

    async def _step_down(self, reason: str, level: int = logging.WARNING) -> None:
        if self.token is None:
            return
        log.log(
            level,
            "leaving the active role node=%s token=%d reason=%s",
            self.node,
            self.token,
            reason,
        )
        self.token = None
        self._set_active(False, f"standby: {reason}")
        try:
            await self.runtime.async_stop()
        finally:
            self.runtime.fence = None

    def _set_active(self, active: bool, detail: str) -> None:
        if self.health is not None:
            self.health.active = active
            # expertline_component_up{component="lease"}: 1 on the active node, 0 on the standby
            self.health.report("lease", active, detail, required=False)
