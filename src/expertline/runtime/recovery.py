"""Recovery: the routing core rebuilt from the database, at a start and after a refused batch.

At a start the stored tasks, offers and experts are restored, their timers armed again, the
tasks whose outcome cannot be known ended (TCD 27), and the channel effects that were not
performed are performed. After a refused batch (``replay.py``) the core is *rewound* to the
committed state the same way, without a restart's consequences.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from expertline.routing import events as ev
from expertline.routing.records import FAILED_SOFTWARE
from expertline.runtime import store
from expertline.runtime.core_adapter import CoreAdapter
from expertline.runtime.effects import Effect, EffectDelivery
from expertline.runtime.pipeline import MAX_BACKOFF
from expertline.runtime.projection import task_view
from expertline.runtime.writer import CommitRefused

if TYPE_CHECKING:
    from expertline.runtime.service import RuntimeService

__all__ = ["FAILED_SOFTWARE", "async_recover", "async_rewind", "lost_after_restart"]

log = logging.getLogger("expertline.runtime")


def lost_after_restart(row: dict[str, Any]) -> bool:
    """Whether a task in flight cannot continue after the runtime restarted.

    SIP-originated tasks: the caller's INVITE transaction (and in proxy mode both call legs)
    lived in the previous process, so the new one can neither answer the caller nor see the
    call end; their outcome is unknown (TCD 27). HTTP tasks continue: the routing client holds
    the task id and keeps polling and reporting.
    """
    return row.get("origin") == "sip"


async def async_recover(rt: RuntimeService, state: store.StoredState) -> None:
    """Rebuild the core from the database; end tasks whose outcome cannot be known."""
    lost = frozenset(row["task_id"] for row in state.tasks if rt.lost_on_recovery(row))
    failover = rt.failover_from is not None
    try:
        await _restore(rt, state, lost, failover)
    except CommitRefused as exc:
        # Ending the lost tasks wrote something the database refuses (a record of a task
        # stored before its values were bounded): recover without ending them, then end
        # each in a batch of its own, where a refusal touches that task alone.
        log.error(
            "recovery batch refused by the database reason=%s; the lost tasks (%d) end one by one",
            exc.reason,
            len(lost),
        )
        rt.batch.seq = await asyncio.to_thread(store.load_sequences, rt.engine)
        rt.timers.clear()
        rt.batch.discard()
        rt.effects.take_done()
        await _restore(rt, state, frozenset(), failover)
        for task_id in sorted(lost):
            rt.pipeline.put(rt.ending(task_id))
    if state.tasks:
        log.info(
            "recovered tasks=%d offers=%d lost=%d (ended with TCD 27: %s)",
            len(state.tasks),
            len(state.offers),
            len(lost),
            "SIP calls whose legs lived in the previous process" if lost else "none",
        )


async def _restore(
    rt: RuntimeService,
    state: store.StoredState,
    lost: frozenset[str],
    failover: bool,
    resume: bool = True,
) -> None:
    """The core from ``state``; ``resume``: perform the stored effects (a start)."""
    _remember(rt, state)
    now = rt.clock()
    core = rt.core = CoreAdapter.restore(rt.config, state, now)
    # Re-arms every timer of the restored tasks and ends the lost ones (TCD 27).
    rt.handle(ev.Recovered(lost_tasks=lost, failover=failover))
    # Undelivered channel effects of the previous run are performed again.
    effects: EffectDelivery = rt.effects
    for row in state.outbox if resume else ():
        channel = next((c for c in rt.channels if c.name == row["channel"]), None)
        if channel is None:
            effects.done.append(row["id"])
            continue
        rt.batch.pending.effects.append(Effect(channel, row["kind"], row["payload"], row["id"]))
    pending = rt.close()
    closed = pending.views
    for row in state.tasks:
        restored = core.export_task(row["task_id"])
        if restored is not None and restored["id"] not in closed.tasks:
            closed.tasks[restored["id"]] = task_view(
                restored, rt.views.meta.get(restored["id"], {})
            )
    for row in state.offers:
        offer = core.export_offer(row["offer_id"])
        if offer is not None and offer["id"] not in closed.offers:
            closed.offers[offer["id"]] = rt.offer_view(offer)
    if not pending.batch.empty():
        await rt.pipeline.async_commit(pending.batch)
    rt.publish(pending)


def _remember(rt: RuntimeService, state: store.StoredState) -> None:
    """The metadata of the stored tasks in flight (origin, callback, external id)."""
    for row in state.tasks:
        meta = (row.get("state") or {}).get("_meta") or {}
        rt.views.meta[row["task_id"]] = {
            "origin": row.get("origin") or meta.get("origin", "http"),
            "callback_url": row.get("callback_url"),
            "external_id": row.get("external_id"),
        }
        if row.get("external_id"):
            rt.views.by_external[row["external_id"]] = row["task_id"]


async def async_rewind(rt: RuntimeService) -> None:
    """Set the core back to the committed state after a refused batch (``replay.py``).

    The database is read back as a restart reads it, but nothing of a restart follows: no
    task is lost, no expert is told of a failover, no effect is performed again. Views,
    waiters and effects only ever saw committed batches, so they stay as they are; what
    the uncommitted batches added to them (tasks, external ids, timers) goes.
    """
    delay = 0.05
    failing = False
    while True:  # the database may be away now: wait for it as commits do
        try:
            state = await asyncio.to_thread(store.load_state, rt.engine)
            rt.batch.seq = await asyncio.to_thread(store.load_sequences, rt.engine)
            break
        except Exception as exc:
            failing = True
            rt.report(False, f"database reads failing: {type(exc).__name__}")
            log.error("reading the committed state failed error=%r; retrying", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF)
    if failing:
        rt.report(True, "database reachable again")
    rt.restore_committed_config()
    rt.views.forget_uncommitted()
    rt.timers.clear()
    rt.batch.discard()
    try:
        await _restore(rt, state, frozenset(), failover=False, resume=False)
    except CommitRefused as exc:  # the committed state settled differently: unexpected
        log.error("rewound state could not be settled reason=%s", exc.reason)
    rt.wake_timers()
