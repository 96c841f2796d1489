"""The routing core: ``RoutingCore.handle(event, now) -> list[Command]``, no I/O inside.

Everything that happens (configuration, presence, task requests, answers, call progress,
timers) comes in as an event with the current time; everything the outside world must do
comes back as commands (offers, withdrawals, labels, records, feed events, timers). Task and
offer statuses move only through the tables of ``routing.states``.

How it stays fast: each queue keeps its *hungry* tasks (waiting, with room for more offers)
ordered per escalation step; each expert knows the (queue, step) pairs whose match set holds
them; the free experts sit in global orderings (``strategies.FreeIndex``). After every event
the core *settles*: the tasks and experts the event touched are matched, best task first, so
that afterwards no hungry task has a free expert it could be offered to. Only the touched
objects are looked at, never all tasks or all experts (configuration changes excepted).

Decisions worth documenting (see also ``docs/routing-states.md``):

- Overflow at max wait keeps the task (same id, code, record) and its original age: in the
  target queue it is ordered by creation time, so it goes ahead of younger tasks of the same
  priority. Its max wait and escalation restart in the target queue. A task without an
  explicit priority takes the target queue's priority. A missing overflow target rejects.
- A declined or unanswered offer puts the expert in cooldown for that task
  (``decline_cooldown``); the task goes to experts who have not had it yet first, and comes
  back to earlier ones (out of cooldown) only when nobody else is free.
- ``max_no_answer`` counts consecutive unanswered offers per expert (any answer resets it);
  the threshold is that of the queue of the offer that just timed out.
- Wrap-up follows a task the expert handled (completed, or failed after being connected).
  An abandoned or failed call that never connected frees the expert at once.
- A delivery failure (19/8) requeues the task in the same queue; its max wait still counts
  from when it entered that queue (it may therefore end at once). The expert whose phone
  failed is kept off that task for ``delivery_cooldown`` (other experts first), so a phone
  that fails at once is called at most once per cooldown; ``max_delivery_failures`` failures
  in a row (a connected call resets the count) set the expert away with a notice.
- An offer that times out and goes straight back to the same expert (nobody else is free)
  is withdrawn with reason ``reoffered``, which the IM channel does not announce.
- ``TaskFailed`` without a disposition ends with 12 (Disconnect/drop reorder).
- A configuration change that removes a queue rejects the tasks waiting in it (TCD 22); tasks
  already with an expert finish normally (a delivery failure then rejects them too: there is
  no queue to go back to). A removed or disabled expert loses their open
  offers (reason ``config``), as does an expert who no longer matches an offered task's
  selection; an expert's tasks in progress are never taken away. A changed max wait or
  escalation applies to waiting tasks as counted from when they entered the queue.
- Ties between experts break by longest idle, then id. Idle time starts when the expert
  becomes available or finishes a task (after wrap-up). ``random`` is seeded from the task id
  and its offer counter, so a replay chooses the same experts.
- Task codes have 4 digits derived from the task id (CRC-32, probing on collisions), unique
  among live tasks; when 90% of them are taken, new codes get 5 digits. Offer ids are
  ``<task id>.<n>``.
- Unknown ids and events that do not apply to an object's status change nothing: answers get
  ``AnswerRefused`` (``unknown``, or ``closed`` for a recently closed offer); other events
  return no commands, so the runtime can tell the caller it conflicts.
- An accept that asks for another phone gets it only if it is one of the expert's numbers
  or matches the queue's ``accept_phones`` (``routing.phones``); otherwise it is refused
  (``AnswerRefused`` ``phone``) and the offer stays open.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from expertline.routing.commands import Command
from expertline.routing.events import ConfigChanged, Event
from expertline.routing.handlers import _HANDLERS, _WELL_FORMED, Handlers
from expertline.routing.model import RoutingConfig
from expertline.routing.state import _CLEAN, Census, Dirty
from expertline.routing.states import WAITING, TaskStatus
from expertline.routing.timers import TimerKey

__all__ = ["Census", "Dirty", "RoutingCore"]

log = logging.getLogger("expertline.routing")


class RoutingCore(Handlers):
    """Matches tasks to experts; see the module docstring for the rules it follows."""

    # ------------------------------------------------------------------ public contract

    @property
    def config(self) -> RoutingConfig | None:
        return self._config

    def handle(self, event: Event, now: float) -> list[Command]:
        """Apply one event at time ``now`` (epoch seconds); return the effects, in order.

        External inputs never raise: unknown ids and events that do not apply to an object's
        status change nothing (answers to offers get ``AnswerRefused``).
        """
        self._now = float(now)
        self._out = []
        if self._expired_now:
            self._expired_now.clear()
        if self._config is None and not isinstance(event, ConfigChanged):
            log.warning("event=%s ignored reason=no_configuration_yet", type(event).__name__)
            return []
        handler = _HANDLERS.get(type(event))
        if handler is None:
            log.warning("event=%s ignored reason=unknown_event_type", type(event).__name__)
            return []
        if not _WELL_FORMED[type(event)](event):
            log.warning("event=%s ignored reason=malformed_fields", type(event).__name__)
            return []
        handler(self, event)
        if self._work_tasks or self._work_experts:
            self._settle()
        if self._touched:
            self._announce_states()
        out, self._out = self._out, []
        return out

    def drain_dirty(self) -> Dirty:
        """Ids changed since the last call. Ended tasks and closed offers stay exportable
        (with their final status) until the following call; call it after every batch of
        events (until then ended tasks are kept in memory for export)."""
        if self._ended_now or self._ended_prev:
            self._ended_prev, self._ended_now = self._ended_now, {}
        if self._closed_now or self._closed_prev:
            self._closed_prev, self._closed_now = self._closed_now, {}
        if not (self._dirty_tasks or self._dirty_offers or self._dirty_experts or self._dirty_meta):
            return _CLEAN
        dirty = Dirty(
            frozenset(self._dirty_tasks),
            frozenset(self._dirty_offers),
            frozenset(self._dirty_experts),
            self._dirty_meta,
        )
        self._dirty_tasks.clear()
        self._dirty_offers.clear()
        self._dirty_experts.clear()
        self._dirty_meta = False
        return dirty

    def export_task(self, task_id: str) -> dict[str, Any] | None:
        """The task as JSON-able data (``active`` false once ended), or None if unknown."""
        t = self._tasks.get(task_id) or self._ended_now.get(task_id)
        t = t or self._ended_prev.get(task_id)
        return None if t is None else t.to_dict()

    def export_offer(self, offer_id: str) -> dict[str, Any] | None:
        o = self._offers.get(offer_id) or self._closed_now.get(offer_id)
        o = o or self._closed_prev.get(offer_id)
        return None if o is None else o.to_dict()

    def export_expert(self, expert_id: str) -> dict[str, Any] | None:
        """The expert's live state, or None once the expert left the configuration."""
        e = self._experts.get(expert_id)
        return None if e is None else e.to_dict()

    def export_meta(self) -> dict[str, Any]:
        """Core-wide counters: the task sequence and the round-robin positions."""
        return {"seq": self._seq, "rr": dict(self._rr)}

    @classmethod
    def restore(
        cls,
        config: RoutingConfig,
        tasks: Iterable[dict[str, Any]],
        offers: Iterable[dict[str, Any]],
        experts: Iterable[dict[str, Any]],
        now: float,
        meta: dict[str, Any] | None = None,
    ) -> RoutingCore:
        """Rebuild a core (indexes included) from exported dicts.

        Feed it ``Recovered(lost_tasks)`` next: that re-arms every live timer, ends the lost
        tasks with TCD 27, and settles whatever the new configuration changed.
        """
        core = cls()
        core._now = float(now)
        core._restore_state(config, tasks, offers, experts, meta)
        return core

    # ------------------------------------------------------------------ read-only queries

    def task(self, task_id: str) -> dict[str, Any] | None:
        """A copy of the task's state (live, or ended since the last two drains)."""
        return self.export_task(task_id)

    def offer(self, offer_id: str) -> dict[str, Any] | None:
        return self.export_offer(offer_id)

    def open_offers(self, expert_id: str) -> list[dict[str, Any]]:
        e = self._experts.get(expert_id)
        if e is None:
            return []
        return [self._offers[oid].to_dict() for oid in e.pending if oid in self._offers]

    def expert_state(self, expert_id: str) -> dict[str, Any] | None:
        e = self._experts.get(expert_id)
        if e is None:
            return None
        d = e.to_dict()
        d["state"] = self._derive(e)
        d["free"] = e.id in self._free
        return d

    def census(self) -> Census:
        """Counts of everything live, in one pass (read by metrics at scrape time)."""
        tasks: dict[str, int] = {}
        waiting: dict[str, tuple[int, float]] = {}
        for t in self._tasks.values():
            status = t.status.value
            tasks[status] = tasks.get(status, 0) + 1
            if t.status in WAITING:
                count, oldest = waiting.get(t.queue_id, (0, t.created_at))
                waiting[t.queue_id] = (count + 1, min(oldest, t.created_at))
        experts: dict[str, int] = {}
        for eid in self._specs:
            e = self._experts.get(eid)
            state = e.state if e is not None else "offline"
            experts[state] = experts.get(state, 0) + 1
        return Census(tasks, waiting, experts, len(self._offers))

    def queue_state(self, queue_id: str) -> dict[str, Any] | None:
        """Waiting tasks, oldest wait and free matching experts of one queue (scans it)."""
        spec = self._queues.get(queue_id)
        if spec is None:
            return None
        waiting = [
            t for t in self._tasks.values() if t.queue_id == queue_id and t.status in WAITING
        ]
        free = self._free.members
        match = self._match(queue_id, 0)
        return {
            "queue_id": queue_id,
            "waiting": len(waiting),
            "offered": sum(1 for t in waiting if t.status is TaskStatus.OFFERED),
            "oldest_created_at": min((t.created_at for t in waiting), default=None),
            "free_experts": sum(1 for eid in match if eid in free),
            "matching_experts": len(match),
        }

    def live_counts(self) -> dict[str, int]:
        return {
            "tasks": len(self._tasks),
            "offers": len(self._offers),
            "experts": len(self._experts),
            "free_experts": len(self._free),
            "timers": len(self._timers),
        }

    def timers(self) -> dict[TimerKey, float]:
        """Every live timer: key -> due time."""
        return dict(self._timers)
