"""The group-commit pipeline: one queue of operations, batches committed in order, fencing.

Everything that can change routing state becomes an *operation* on one queue. The pipeline's
writer task takes the waiting operations (up to a bound), runs each on the core (``apply``),
closes the batch (``Stages.close``: the rows of everything the core marked dirty) and hands it
to the ``BatchWriter``; once it has committed, and every batch before it has been published,
the batch is published (``Stages.publish``) and its callers are answered. Under load many
operations share one commit, which is what makes durable routing fast.

Callers never wait without bound. When a commit fails (the database is away, a PostgreSQL
primary is being replaced) or does not land within ``ANSWER_WITHIN`` seconds, the callers of
that batch get ``Unavailable`` at once, while the batch itself is retried until it lands (it
may: a 503 promises nothing either way; a client retries with the same ``external_id``).
While commits fail, new operations are refused at once, and a stopping pipeline answers
every operation it still holds.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from expertline.errors import Conflict, InvalidInput, NotFound, Unavailable
from expertline.ha.lease import Fenced
from expertline.metrics import RuntimeMetrics
from expertline.routing.model import RoutingConfig
from expertline.routing.timers import TimerKey
from expertline.runtime import store
from expertline.runtime.effects import Effect
from expertline.runtime.projection import Closed
from expertline.runtime.replay import Replayer, Superseded
from expertline.runtime.writer import BatchWriter, CommitBehind, CommitRefused

log = logging.getLogger("expertline.runtime")

T = TypeVar("T")

MIN_BATCH = 64  # operations a batch takes at least, when that many wait
MAX_IN_FLIGHT = 4  # closed batches on their way to the database at once
ANSWER_WITHIN = 2.0  # seconds a caller waits for its commit before it hears 503
RETRY_AFTER = 2  # seconds, the hint a refused caller gets (HTTP and SIP Retry-After)
MAX_BACKOFF = 1.0  # seconds between two attempts of a commit while the database is away

STOPPED = "the routing runtime is not running on this node"
NOT_ACTIVE = "this node is no longer the active one; retry"


def database_away() -> Unavailable:
    return Unavailable(
        "the database is not reachable from this node; the change may not be stored: retry "
        "(with the same external_id, a task is created once)",
        retry_after=RETRY_AFTER,
    )


@dataclass
class Operation:
    """Work for the writer: ``apply`` runs on the writer with the core; its value is returned
    to the caller once the transaction holding its effects has committed."""

    apply: Callable[[], Any]
    future: asyncio.Future[Any] | None
    timer: TimerKey | None = None  # the core timer it fires, if that is what it does


Result = tuple[Operation, bool, Any]  # (operation, ok, value or exception)


@dataclass
class Pending:
    """What the current batch produced, beyond the rows: post-commit work."""

    batch: store.Batch = field(default_factory=store.Batch)
    effects: list[Effect] = field(default_factory=list)
    views: Closed = field(default_factory=Closed)  # views at close
    order: int = 0  # batches in the order they closed
    config: tuple[RoutingConfig, Any] | None = None  # (configuration, document) at close


class Stages(Protocol):
    """The runtime's steps the pipeline runs."""

    def close(self) -> Pending:
        """Close the current batch (the rows of everything the core marked dirty)."""
        ...

    def publish(self, pending: Pending) -> None:
        """The batch is durable: views, waiters, effects."""
        ...

    def report(self, up: bool, detail: str) -> None:
        """Readiness of the runtime (``/readyz``)."""
        ...

    def fenced(self) -> None:
        """A commit found another node holding the lease."""
        ...


class Pipeline:
    def __init__(
        self,
        writer: BatchWriter,
        stages: Stages,
        node: str,
        metrics: RuntimeMetrics | None = None,
    ) -> None:
        self.writer = writer
        self.metrics = metrics if metrics is not None else RuntimeMetrics()
        self.stages = stages
        self.node = node
        self.replay: Replayer | None = None  # set by the runtime (it needs ``async_commit``)
        self.queue: asyncio.Queue[Operation] = asyncio.Queue()
        self.commits = 0
        self.fenced: Fenced | None = None
        self.writes_failing = False
        self.accepting = False
        self._ops_in_flight = 0  # operations in batches handed to the writer, not answered
        self._in_flight: dict[asyncio.Task[None], list[Result]] = {}

    # --- operations -----------------------------------------------------------------------

    async def async_submit(self, apply: Callable[[], T]) -> T:
        if not self.accepting:
            raise Unavailable(STOPPED, retry_after=RETRY_AFTER)
        if self.fenced is not None:
            raise Unavailable(
                "this node is no longer the active one (another node took over)",
                retry_after=RETRY_AFTER,
            )
        if self.writes_failing and self._in_flight:  # a batch is retrying: no wait behind it
            raise database_away()
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self.queue.put_nowait(Operation(apply, fut))
        return await fut

    def put(self, op: Operation) -> None:
        """Queue an operation without a caller (a timer, an ending, a wake-up)."""
        self.queue.put_nowait(op)

    def wake(self) -> None:
        self.queue.put_nowait(Operation(lambda: None, None))

    # --- the writer ---------------------------------------------------------------------------

    async def async_run(self) -> None:
        """Handle batches while earlier ones commit; commits and publication stay in order.

        A batch takes half of the operations waiting (at least ``MIN_BATCH``, at most the
        writer's ``batch_ops``) and goes to the writer as soon as it closes (up to
        ``MAX_IN_FLIGHT`` on their way). Callers wait for their commit before sending more,
        so one batch of everything would leave the core idle while the database works and
        the database idle while the core works; two halves keep both busy. Each batch is
        closed with snapshots of what changed, so publishing a batch after its commit never
        shows the state of a later, not yet durable, batch.
        """
        assert self.replay is not None
        replay = self.replay
        in_flight: collections.deque[asyncio.Task[None]] = collections.deque()
        try:
            while True:
                first = await self.queue.get()
                if replay.wanted:  # a batch was refused (``runtime/replay.py``)
                    await asyncio.gather(*in_flight, return_exceptions=True)
                    in_flight.clear()
                    try:
                        await replay.async_run()
                    except Exception:  # the writer must go on; its callers must hear back
                        log.exception("replaying a refused batch failed")
                        replay.abandon(Unavailable("the change could not be replayed"))
                waiting = self.queue.qsize() + 1 + self._ops_in_flight  # callers not answered
                limit = min(self.writer.batch_ops, max(MIN_BATCH, waiting // 2))
                deciding = time.perf_counter()
                results = [self.apply(first)]
                while len(results) < limit and not self.queue.empty():
                    results.append(self.apply(self.queue.get_nowait()))
                self.metrics.decided(time.perf_counter() - deciding)
                pending = self.stages.close()
                while in_flight and in_flight[0].done():
                    in_flight.popleft()
                if len(in_flight) >= MAX_IN_FLIGHT:
                    await asyncio.wait([in_flight[0]])
                    in_flight.popleft()
                previous = in_flight[-1] if in_flight else None
                self._ops_in_flight += len(results)
                task = asyncio.create_task(self._finish(pending, results, previous))
                self._in_flight[task] = results
                task.add_done_callback(self._in_flight.pop)
                in_flight.append(task)
                await asyncio.sleep(0)  # the batch leaves now, not when the queue is empty
        finally:
            if in_flight and not self.writes_failing:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(asyncio.shield(asyncio.gather(*in_flight)), timeout=10)
            replay.abandon(Unavailable(STOPPED))

    def apply(self, op: Operation) -> Result:
        """Run one operation on the core; typed failures go back to their caller."""
        try:
            return op, True, op.apply()
        except Exception as exc:
            if not isinstance(exc, InvalidInput | NotFound | Conflict):
                log.exception("operation failed error=%r", exc)
            return op, False, exc

    async def _finish(
        self, pending: Pending, results: list[Result], previous: asyncio.Task[None] | None
    ) -> None:
        """Commit a closed batch, then (after the batch before it) publish it and answer its
        callers."""
        assert self.replay is not None

        def unanswered() -> None:  # the commit is late or failing: callers hear it now
            for op, _, _ in results:
                if op.future is not None and not op.future.done():
                    op.future.set_exception(database_away())

        late = asyncio.get_running_loop().call_later(ANSWER_WITHIN, unanswered)
        try:
            await self._settle(pending, results, previous, unanswered)
        finally:
            late.cancel()

    async def _settle(
        self,
        pending: Pending,
        results: list[Result],
        previous: asyncio.Task[None] | None,
        unanswered: Callable[[], None],
    ) -> None:
        assert self.replay is not None
        try:
            if not pending.batch.empty():
                await self.async_commit(pending.batch, previous, unanswered)
        except Fenced:
            # Nothing of this batch is durable and another node runs from the database now:
            # its callers get 503, nothing is published, no effect leaves.
            results = [(op, False, Unavailable(NOT_ACTIVE)) for op, _, _ in results]
        except (CommitRefused, Superseded) as exc:
            # Not durable, and never retried as is: its operations are replayed one by one,
            # and their callers answered then (``runtime/replay.py``).
            self._ops_in_flight -= len(results)
            self.replay.hold(pending, results, getattr(exc, "reason", None))
            return
        else:
            if previous is not None:
                await asyncio.wait([previous])
            if self.replay.after_refusal(pending.order):  # ran on state being undone
                self._ops_in_flight -= len(results)
                self.replay.hold(pending, results)
                return
            try:
                self.stages.publish(pending)
            except Exception:  # publishing must not stop the writer
                log.exception("publishing a committed batch failed")
        self._ops_in_flight -= len(results)
        for op, ok, value in results:
            if op.future is None or op.future.done():
                continue
            if ok:
                op.future.set_result(value)
            else:
                op.future.set_exception(value)

    async def async_commit(
        self,
        batch: store.Batch,
        previous: asyncio.Task[None] | None = None,
        failing: Callable[[], None] | None = None,
    ) -> None:
        """Commit one batch; while the database is away retry with capped backoff until it
        lands (``failing`` is told at the first failure). A batch the database refuses
        (``CommitRefused``) is not retried, and neither is one closed after it
        (``Superseded``): the replayer splits them. ``previous``: the batch before it, which
        commits first."""
        assert self.replay is not None
        delay = 0.05
        while True:
            if self.replay.overtaken(batch.seq):
                raise Superseded(f"batch {batch.seq} follows a refused batch")
            started = time.perf_counter()
            try:
                written = await self.writer.async_write(batch)
            except Fenced as exc:
                self._database_answered()
                self._fence_tripped(exc)
                raise
            except CommitRefused:
                self._database_answered()
                raise
            except Exception as exc:
                if isinstance(exc, CommitBehind):  # the batch before it lands, or is refused
                    if previous is not None and not previous.done():
                        await asyncio.wait([previous])
                    else:
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, MAX_BACKOFF)
                    continue
                if not self.writes_failing:
                    self.writes_failing = True
                    self.stages.report(False, f"database writes failing: {str(exc)[:200]}")
                if failing is not None:
                    failing()
                log.error(
                    "commit failed rows=%d error=%r; retrying in %.2fs (state is kept in memory)",
                    batch.rows(),
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)
                continue
            if not written:
                log.info("batch was already committed seq=%s", batch.seq)
            self.commits += 1
            if self.writes_failing:
                self._database_answered()
                log.info("commit succeeded after retries rows=%d", batch.rows())
            elapsed = time.perf_counter() - started
            self.metrics.commit.observe(elapsed)
            if elapsed > 1.0:
                log.warning("slow commit seconds=%.3f rows=%d", elapsed, batch.rows())
            return

    def _database_answered(self) -> None:
        if self.writes_failing:
            self.writes_failing = False
            self.stages.report(True, "database writable again")

    def _fence_tripped(self, exc: Fenced) -> None:
        """A commit found another node holding the lease: take no more operations, and tell
        the lease keeper (it stops this runtime; the other node recovers from the database)."""
        if self.fenced is not None:
            return
        self.fenced = exc
        log.error("commit refused node=%s: %s; leaving the active role", self.node, exc)
        self.stages.report(False, "fenced: another node is active")
        self.stages.fenced()

    # --- stopping -----------------------------------------------------------------------------

    async def async_drain(self) -> None:
        """Stop taking operations; let the current batch commit (not waiting long when the
        database is away)."""
        self.accepting = False
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.queue.put_nowait(Operation(lambda: None, done))
        with contextlib.suppress(Exception):
            await asyncio.wait_for(done, timeout=1.0 if self.writes_failing else 10.0)

    def answer_the_rest(self) -> None:
        """The writer has stopped: every operation still held hears 503 (none waits for a
        commit that no longer comes)."""
        for task, results in list(self._in_flight.items()):
            task.cancel()
            for op, _, _ in results:
                if op.future is not None and not op.future.done():
                    op.future.set_exception(Unavailable(STOPPED, retry_after=RETRY_AFTER))
        self._in_flight.clear()
        while not self.queue.empty():
            op = self.queue.get_nowait()
            if op.future is not None and not op.future.done():
                op.future.set_exception(Unavailable(STOPPED, retry_after=RETRY_AFTER))
