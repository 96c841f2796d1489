"""Routing around a change the database refuses: split the batch, replay it one by one.

The runtime commits the work of many operations in one transaction (``service.py``), in
order. When the database refuses a batch's data (``refusal.py``: a constraint, a value it
cannot store), trying that batch again cannot help, and no later batch can commit before it.
The ``Replayer`` then

1. *holds* the refused batch and every batch closed after it: none is published, none of
   their effects (IM texts, webhooks, waiters woken) leaves, their callers wait;
2. once every batch in flight has settled, has the core *rewound* to the committed state
   (the database's, read back as a restart reads it, without a restart's consequences);
3. *replays* the held operations in their order, one operation per batch. An operation whose
   own batch is refused again is refused to its caller (``InvalidInput``, one line naming
   what the database refused) and changes nothing. One without a caller (a timer) is logged
   as an error and the tasks it concerned end with TCD 27 (Failed Software) when that can be
   written; otherwise it is dropped. A timer refused twice is not armed again in this run,
   so nothing loops.

Then routing continues. While commits succeed none of this runs: the writer's fast path
only asks ``overtaken``/``after_refusal`` (two comparisons with None) per batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import Counter

from expertline.errors import InvalidInput
from expertline.ha.lease import Fenced
from expertline.routing.timers import TimerKey
from expertline.runtime import store
from expertline.runtime.writer import CommitRefused

log = logging.getLogger("expertline.runtime")

REFUSED_AGAIN = 2  # refusals of the same timer after which it is dropped for this run
REFUSED = Counter(
    "expertline_runtime_refused_changes",
    "Changes the database refused: refused to their caller (request) or ended (internal)",
    ["origin"],
)


class Superseded(Exception):
    """A batch closed after a refused one: it cannot commit before that one (batches commit
    in order), so its operations are replayed instead."""


class Operation(Protocol):
    """An operation of the writer's queue (``service._Operation``)."""

    @property
    def future(self) -> asyncio.Future[Any] | None: ...

    @property
    def timer(self) -> TimerKey | None: ...


Result = tuple[Any, bool, Any]  # (operation, ok, value or exception): its caller's answer


class Closed(Protocol):
    """A closed batch and what its commit publishes (``service._Pending``)."""

    @property
    def order(self) -> int: ...

    @property
    def batch(self) -> store.Batch: ...


@dataclass(frozen=True)
class Host:
    """What the replayer does to the runtime, through the runtime's own steps."""

    apply: Callable[[Any], Result]  # run one operation on the core
    close: Callable[[], Any]  # close the current batch (a ``Closed``)
    commit: Callable[[store.Batch], Awaitable[None]]  # retries while the database is away
    publish: Callable[[Any], None]  # the batch is durable: views, waiters, effects
    rewind: Callable[[], Awaitable[None]]  # the core back to the committed state
    ending: Callable[[str], Operation]  # an operation ending a task with TCD 27
    drop_timer: Callable[[TimerKey], None]  # forget a timer until the next rewind
    wake: Callable[[], None]  # make the writer look at its queue
    give_back: Callable[[list[int]], None]  # outbox rows done, for the next batch
    stopped: Callable[[], Exception]  # the error callers get once the node is fenced


class Replayer:
    def __init__(self, host: Host) -> None:
        self._host = host
        self._held: list[tuple[Any, list[Result]]] = []
        self._refused_seq: int | None = None
        self._refused_order: int | None = None
        self._replaying: deque[Operation] = deque()
        self._timer_refusals: dict[TimerKey, int] = {}
        self.dropped: set[TimerKey] = set()  # timers not armed again in this run
        self.rewinds = 0
        self.replayed = 0  # operations replayed one by one
        self.refused = 0  # operations refused because the database refused their change

    # --- asked by the writer's fast path ---------------------------------------------------

    @property
    def wanted(self) -> bool:
        """A batch was refused: the writer settles what is in flight and calls ``async_run``."""
        return self._refused_order is not None

    def overtaken(self, seq: int | None) -> bool:
        """Whether batch ``seq`` was closed after the refused batch (it cannot commit)."""
        return self._refused_seq is not None and seq is not None and seq > self._refused_seq

    def after_refusal(self, order: int) -> bool:
        """Whether the batch closed ``order``-th follows the refused one (it is held)."""
        return self._refused_order is not None and order > self._refused_order

    # --- holding ----------------------------------------------------------------------------

    def hold(self, closed: Closed, results: Sequence[Result], refused: str | None = None) -> None:
        """Keep a batch for the replay: the refused one (``refused`` says why) or a later one."""
        if refused is not None and (
            self._refused_order is None or closed.order < self._refused_order
        ):
            first = self._refused_order is None
            self._refused_seq, self._refused_order = closed.batch.seq, closed.order
            if first:
                log.warning(
                    "batch refused by the database seq=%s operations=%d reason=%s; "
                    "taking no new batch, its operations are replayed one by one",
                    closed.batch.seq,
                    len(results),
                    refused,
                )
                self._host.wake()
        self._held.append((closed, list(results)))

    def abandon(self, error: Exception) -> None:
        """The runtime stops: callers still waiting for a replay get ``error``."""
        for _, results in self._held:
            self._replaying.extend(op for op, _, _ in results)
        self._held = []
        while self._replaying:
            _fail(self._replaying.popleft(), error)

    # --- the replay ---------------------------------------------------------------------------

    async def async_run(self) -> None:
        """Rewind, then replay the held operations one per batch (every batch has settled)."""
        held = sorted(self._held, key=lambda h: h[0].order)
        self._held = []
        self._refused_seq = self._refused_order = None
        for closed, _ in held:
            self._host.give_back(closed.batch.outbox_done)
        self._replaying.extend(op for _, results in held for op, _, _ in results)
        log.info(
            "replaying operations=%d of batches=%d after a refused batch",
            len(self._replaying),
            len(held),
        )
        try:
            await self._rewind()
            while self._replaying:
                op = self._replaying[0]  # still there if the runtime stops meanwhile (abandon)
                self.replayed += 1
                await self._replay_one(op)
                self._replaying.popleft()
        except Fenced:  # another node took over: nothing more is written here
            self.abandon(self._host.stopped())
            return
        log.info("replay done refused=%d rewinds=%d; routing continues", self.refused, self.rewinds)

    async def _rewind(self) -> None:
        await self._host.rewind()
        self.rewinds += 1
        for key in self.dropped:
            self._host.drop_timer(key)

    async def _replay_one(self, op: Operation) -> None:
        result = self._host.apply(op)
        closed = self._host.close()
        if not closed.batch.empty():
            try:
                await self._host.commit(closed.batch)
            except CommitRefused as exc:
                await self._refused(op, closed, exc.reason)
                return
        self._host.publish(closed)
        _answer(result)

    async def _refused(self, op: Operation, closed: Closed, reason: str) -> None:
        """``op`` alone was refused: undo it, tell its caller, or end what it concerned."""
        self.refused += 1
        REFUSED.labels(origin="internal" if op.future is None else "request").inc()
        tasks = sorted(closed.batch.tasks)
        await self._rewind()
        if op.future is not None:
            log.warning(
                "change refused by the database reason=%s tasks=%s; refused to its caller, "
                "nothing changed",
                reason,
                ",".join(tasks) or "-",
            )
            _fail(op, InvalidInput(f"the database refused this change: {reason}"))
            return
        subject = timer_task(op.timer)
        ending = [subject] if subject is not None else tasks
        log.error(
            "change without a caller refused by the database reason=%s timer=%s tasks=%s; "
            "its tasks end with TCD 27 (Failed Software)",
            reason,
            op.timer or "-",
            ",".join(ending) or "-",
        )
        for task_id in ending:
            await self._end(task_id, reason)
        if op.timer is not None:
            count = self._timer_refusals[op.timer] = self._timer_refusals.get(op.timer, 0) + 1
            if count >= REFUSED_AGAIN:
                self.dropped.add(op.timer)
                self._host.drop_timer(op.timer)
                log.error(
                    "timer dropped key=%s after %d refusals; it stays unarmed until restart",
                    op.timer,
                    count,
                )

    async def _end(self, task_id: str, reason: str) -> None:
        self._host.apply(self._host.ending(task_id))
        closed = self._host.close()
        if closed.batch.empty():
            return  # the task is no longer in flight
        try:
            await self._host.commit(closed.batch)
        except CommitRefused as exc:
            log.error(
                "task=%s could not be ended either reason=%s; dropped: it stays as committed",
                task_id,
                exc.reason,
            )
            await self._rewind()
            return
        self._host.publish(closed)
        log.warning(
            "task=%s ended disposition=27 reason=database_refused_change detail=%s",
            task_id,
            reason,
        )


def timer_task(key: TimerKey | None) -> str | None:
    """The task a core timer belongs to; None for an expert's timer (wrap-up) or no timer."""
    return None if key is None else key.task_id


def _answer(result: Result) -> None:
    op, ok, value = result
    future = op.future
    if future is None or future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


def _fail(op: Operation, error: Exception) -> None:
    future = op.future
    if future is not None and not future.done():
        future.set_exception(error)
