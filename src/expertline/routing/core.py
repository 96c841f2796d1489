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
  from when it entered that queue (it may therefore end at once).
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
import math
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sortedcontainers import SortedList  # type: ignore[import-untyped]

from expertline.records.feed import EXPERT_STATE, TASK_RECORD, ExpertStateRecord
from expertline.routing import records
from expertline.routing.commands import (
    AnswerRefused,
    CancelTimer,
    Command,
    ConfirmAccepted,
    Emit,
    NotifyExpert,
    ReturnLabel,
    SendOffer,
    SetTimer,
    WithdrawOffer,
    WriteRecord,
)
from expertline.routing.events import (
    CallConnected,
    CallEnded,
    ConfigChanged,
    DeliveryFailed,
    Event,
    OfferAccepted,
    OfferDeclined,
    PresenceChanged,
    Recovered,
    TaskAbandoned,
    TaskCreated,
    TaskFailed,
    TimerFired,
)
from expertline.routing.live import ExpertLive, Offer, Task
from expertline.routing.model import (
    MAX_TASK_LIFETIME,
    ExpertSpec,
    Presence,
    QueueSpec,
    RoutingConfig,
)
from expertline.routing.phones import accepted_label
from expertline.routing.states import (
    WAITING,
    WITH_EXPERT,
    OfferStatus,
    OfferTrigger,
    TaskStatus,
    TaskTrigger,
    advance_offer,
    advance_task,
    task_allows,
)
from expertline.routing.strategies import UNTRIED, FreeIndex, choose

log = logging.getLogger("expertline.routing")

PRESENCES = frozenset(Presence)
CHANNELS = frozenset({"voice", "chat"})
TIMER_TOLERANCE = 0.001  # a timer fired this much early still counts (clock rounding)
RECENT_CLOSED_OFFERS = 50_000  # closed offers remembered to answer late replies with "closed"

_Slot = tuple[str, int]  # (queue id, escalation step)
_TimerEntry = tuple[float, str, str, str]  # at, kind, first id, second id


@dataclass(frozen=True, slots=True)
class Dirty:
    """What changed since the previous ``drain_dirty``: persist these before any effect."""

    tasks: frozenset[str]
    offers: frozenset[str]
    experts: frozenset[str]
    meta: bool

    def __bool__(self) -> bool:
        return bool(self.tasks or self.offers or self.experts or self.meta)


_CLEAN = Dirty(frozenset(), frozenset(), frozenset(), False)


class RoutingCore:
    """Matches tasks to experts; see the module docstring for the rules it follows."""

    def __init__(self) -> None:
        self._config: RoutingConfig | None = None
        self._specs: dict[str, ExpertSpec] = {}
        self._queues: dict[str, QueueSpec] = {}
        self._retired_queues: dict[str, QueueSpec] = {}
        self._tasks: dict[str, Task] = {}  # live tasks
        self._offers: dict[str, Offer] = {}  # open offers
        self._experts: dict[str, ExpertLive] = {}
        self._codes: dict[str, str] = {}  # code -> task id (live tasks)
        self._code_counts: dict[int, int] = {}  # code width -> codes in use
        self._hungry: dict[_Slot, SortedList] = {}
        self._hung: dict[str, tuple[_Slot, tuple[Any, ...]]] = {}  # task id -> (slot, key)
        self._expert_slots: dict[str, list[_Slot]] = {}
        self._slot_free: dict[_Slot, int] = {}  # free experts per (queue, step) match set
        self._free = FreeIndex({}, ())
        self._timers: dict[str, _TimerEntry] = {}
        self._task_timers: dict[str, dict[str, None]] = {}
        self._rr: dict[str, str] = {}  # queue id -> expert offered last (round robin)
        self._seq = 0
        # ended tasks / closed offers stay exportable until the drain after the one that
        # reported them
        self._ended_now: dict[str, Task] = {}
        self._ended_prev: dict[str, Task] = {}
        self._closed_now: dict[str, Offer] = {}
        self._closed_prev: dict[str, Offer] = {}
        self._recent_closed: OrderedDict[str, str] = OrderedDict()  # offer id -> expert id
        self._dirty_tasks: set[str] = set()
        self._dirty_offers: set[str] = set()
        self._dirty_experts: set[str] = set()
        self._dirty_meta = False
        # per handle() call
        self._now = 0.0
        self._out: list[Command] = []
        self._work_tasks: set[str] = set()
        self._work_experts: set[str] = set()
        self._touched: set[str] = set()

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
        core._install_config(config)
        for d in experts:
            e = ExpertLive.from_dict(d)
            e.active = {}
            e.pending = {}
            core._experts[e.id] = e
        for eid in config.experts:
            core._experts.setdefault(eid, ExpertLive(eid))
        for d in tasks:
            t = Task.from_dict(d)
            if t.status not in WAITING and t.status not in (
                TaskStatus.ASSIGNED,
                TaskStatus.CONNECTED,
            ):
                continue
            core._tasks[t.id] = t
            core._take_code(t.code, t.id)
            core._seq = max(core._seq, t.seq + 1)
        for d in offers:
            if d.get("status", "open") != "open":
                continue
            o = Offer.from_dict(d)
            owner = core._tasks.get(o.task_id)
            if (
                owner is None
                or owner.status not in WAITING
                or owner.open_offers.get(o.expert_id) != o.id
            ):
                continue
            core._offers[o.id] = o
        for t in sorted(core._tasks.values(), key=lambda t: t.seq):
            t.open_offers = {eid: oid for eid, oid in t.open_offers.items() if oid in core._offers}
            if t.status is TaskStatus.OFFERED and not t.open_offers:
                t.status = TaskStatus.QUEUED
            elif t.status is TaskStatus.QUEUED and t.open_offers:
                t.status = TaskStatus.OFFERED
            for eid, oid in t.open_offers.items():
                core._experts.setdefault(eid, ExpertLive(eid)).pending[oid] = t.id
            if t.expert_id is not None and t.status not in WAITING:
                core._experts.setdefault(t.expert_id, ExpertLive(t.expert_id)).active[t.id] = None
        if meta:
            core._seq = max(core._seq, int(meta.get("seq", 0)))
            core._rr = {str(k): str(v) for k, v in (meta.get("rr") or {}).items()}
        for o in core._offers.values():
            if o.expires_at is not None:
                core._set_timer(f"offer:{o.id}", o.expires_at, "offer", o.id, "", quiet=True)
        for t in core._tasks.values():
            if t.status in WAITING:
                core._arm_task_timers(t, quiet=True)
                core._rehung(t)
            elif t.status in WITH_EXPERT:
                core._arm_lifetime(t, quiet=True)
        for e in core._experts.values():
            if e.wrapup_until is not None:
                core._set_timer(f"wrapup:{e.id}", e.wrapup_until, "wrapup", e.id, "", quiet=True)
            core._reindex(e)
        core._dirty_tasks.clear()
        core._dirty_offers.clear()
        core._dirty_experts.clear()
        core._dirty_meta = False
        core._touched.clear()
        core._work_tasks.clear()
        core._work_experts.clear()
        core._out = []
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

    def timers(self) -> dict[str, float]:
        """Every live timer: key -> due time."""
        return {k: v[0] for k, v in self._timers.items()}

    # ------------------------------------------------------------------ event handlers

    def _on_config(self, ev: ConfigChanged) -> None:
        first = self._config is None
        old_queues = dict(self._queues)
        self._install_config(ev.config)
        for qid, spec in old_queues.items():
            if qid not in self._queues:
                self._retired_queues[qid] = spec
        log.info(
            "config version=%s experts=%d queues=%d first=%s",
            ev.config.version,
            len(ev.config.experts),
            len(ev.config.queues),
            first,
        )
        self._reconcile()

    def _on_presence(self, ev: PresenceChanged) -> None:
        e = self._experts.get(ev.expert_id)
        if e is None or ev.expert_id not in self._specs or ev.status not in PRESENCES:
            return
        self._set_presence(e, Presence(ev.status), ev.source)

    def _on_task_created(self, ev: TaskCreated) -> None:
        tid = ev.task_id
        spec = self._queues.get(ev.queue_id)
        if (
            not isinstance(tid, str)
            or not tid
            or tid in self._tasks
            or spec is None
            or ev.channel not in CHANNELS
            or (
                ev.priority is not None
                and (not isinstance(ev.priority, int) or isinstance(ev.priority, bool))
            )
        ):
            log.debug("task=%s ignored reason=invalid_or_duplicate", tid)
            return
        assert self._config is not None
        now = self._now
        t = Task(
            id=tid,
            seq=self._seq,
            queue_id=ev.queue_id,
            channel=ev.channel,
            priority=spec.priority if ev.priority is None else ev.priority,
            explicit_priority=ev.priority,
            caller=ev.caller,
            dialed_number=ev.dialed_number,
            external_id=ev.external_id,
            attributes=dict(ev.attributes or {}),
            code=self._alloc_code(tid),
            created_at=now,
            config_version=self._config.version,
        )
        self._seq += 1
        self._dirty_meta = True
        self._tasks[tid] = t
        self._dirty_tasks.add(t.id)
        self._emit(
            "task.created",
            task_id=tid,
            code=t.code,
            queue_id=t.queue_id,
            channel=t.channel,
            priority=t.priority,
            external_id=t.external_id,
        )
        self._emit("task.queued", task_id=tid, queue_id=t.queue_id, priority=t.priority)
        self._arm_task_timers(t)
        self._work_tasks.add(tid)  # settled (and put in its queue's ordering) right away

    def _on_accept(self, ev: OfferAccepted) -> None:
        o = self._offers.get(ev.offer_id)
        if o is None:
            self._refuse(ev.offer_id)
            return
        e = self._experts.get(o.expert_id)
        spec = self._specs.get(o.expert_id)
        t = self._tasks[o.task_id]
        if e is None or spec is None or not spec.enabled:
            self._out.append(AnswerRefused(o.id, o.expert_id, "capacity"))
            return
        label: str | None = spec.phone
        if isinstance(ev.phone, str) and ev.phone:
            queue = self._queues.get(t.queue_id)
            label = accepted_label(ev.phone, spec, queue.accept_phones if queue else None)
        if label is None:  # a number the expert may not ask for: the offer stays open
            self._out.append(AnswerRefused(o.id, o.expert_id, "phone"))
            return
        self._close_offer(o, OfferTrigger.ACCEPT)
        self._emit("offer.accepted", offer_id=o.id, task_id=t.id, expert_id=o.expert_id)
        if t.open_offers:
            self._withdraw_task_offers(t, "taken")
        self._out.append(ConfirmAccepted(o.id, t.id, o.expert_id, o.code))
        self._assign(t, e, label)

    def _on_decline(self, ev: OfferDeclined) -> None:
        o = self._offers.get(ev.offer_id)
        if o is None:
            self._refuse(ev.offer_id)
            return
        t = self._tasks[o.task_id]
        e = self._experts.get(o.expert_id)
        if e is not None:
            e.no_answer = 0
        self._close_offer(o, OfferTrigger.DECLINE)
        self._emit("offer.declined", offer_id=o.id, task_id=t.id, expert_id=o.expert_id)
        self._cooldown(t, o.expert_id)

    def _on_connected(self, ev: CallConnected) -> None:
        t = self._tasks.get(ev.task_id)
        if t is None or not task_allows(t.status, TaskTrigger.CONNECT):
            return
        t.status = advance_task(t.status, TaskTrigger.CONNECT)
        t.connected_at = self._now
        self._dirty_tasks.add(t.id)
        self._emit("task.connected", task_id=t.id, expert_id=t.expert_id)

    def _on_ended(self, ev: CallEnded) -> None:
        t = self._tasks.get(ev.task_id)
        if t is None or not task_allows(t.status, TaskTrigger.END):
            return
        self._end(t, TaskTrigger.END, records.handled_disposition(t))

    def _on_abandoned(self, ev: TaskAbandoned) -> None:
        t = self._tasks.get(ev.task_id)
        if t is None or not task_allows(t.status, TaskTrigger.ABANDON):
            return
        self._end(t, TaskTrigger.ABANDON, records.abandon_disposition(t))

    def _on_failed(self, ev: TaskFailed) -> None:
        t = self._tasks.get(ev.task_id)
        if t is None or not task_allows(t.status, TaskTrigger.FAIL):
            return
        disp = ev.disposition
        if disp is None:
            disp = records.FAILED_DEFAULT
        elif not isinstance(disp, int) or isinstance(disp, bool) or not 1 <= disp <= 99:
            log.debug("task=%s fail ignored reason=bad_disposition value=%r", t.id, disp)
            return
        self._end(t, TaskTrigger.FAIL, disp)

    def _on_delivery_failed(self, ev: DeliveryFailed) -> None:
        t = self._tasks.get(ev.task_id)
        if (
            t is None
            or ev.disposition not in records.DELIVERY_FAILURES
            or not task_allows(t.status, TaskTrigger.DELIVERY_FAILED)
        ):
            return
        now = self._now
        eid = t.expert_id
        assert eid is not None
        t.attempts.append({"expert_id": eid, "disposition": ev.disposition, "at": now})
        self._out.append(
            WriteRecord(
                "attempt",
                {
                    "task_id": t.id,
                    "peripheral_call_key": t.code,
                    "router_call_key": t.external_id,
                    "dialed_number": t.dialed_number,
                    "ani": t.caller,
                    "call_disposition": ev.disposition,
                    "expert_id": eid,
                    "queue_id": t.queue_id,
                    "ring_time": round(now - (t.assigned_at or now), 3),
                    "at": now,
                },
            )
        )
        e = self._experts.get(eid)
        if e is not None:
            e.active.pop(t.id, None)
            self._expert_changed(e)
            self._work_experts.add(eid)
        t.status = advance_task(t.status, TaskTrigger.DELIVERY_FAILED)
        self._drop_timer(f"lifetime:{t.id}", cancel=True)
        t.expert_id = None
        t.label = None
        t.assigned_at = None
        t.connected_at = None
        self._dirty_tasks.add(t.id)
        log.info(
            "task=%s requeued queue=%s expert=%s disposition=%d reason=delivery_failed",
            t.id,
            t.queue_id,
            eid,
            ev.disposition,
        )
        self._emit(
            "task.requeued",
            task_id=t.id,
            queue_id=t.queue_id,
            expert_id=eid,
            disposition=ev.disposition,
        )
        self._emit("task.queued", task_id=t.id, queue_id=t.queue_id, priority=t.priority)
        self._cooldown(t, eid)
        if t.queue_id not in self._queues:
            log.info("task=%s rejected reason=queue_removed queue=%s", t.id, t.queue_id)
            self._end(t, TaskTrigger.REJECT, records.TIME_OUT)
            return
        self._arm_task_timers(t)
        self._rehung(t)
        self._work_tasks.add(t.id)

    def _on_timer(self, ev: TimerFired) -> None:
        entry = self._timers.get(ev.key)
        if entry is None:
            return
        at, kind, a, b = entry
        if self._now + TIMER_TOLERANCE < at:
            return  # an earlier setting of a moved timer
        self._drop_timer(ev.key)
        if kind == "offer":
            o = self._offers.get(a)
            if o is not None:
                self._expire_offer(o)
        elif kind == "maxwait":
            t = self._tasks.get(a)
            if t is not None and t.status in WAITING:
                self._max_wait(t)
        elif kind == "escalate":
            t = self._tasks.get(a)
            if t is not None and t.status in WAITING:
                self._escalate(t)
        elif kind == "wrapup":
            e = self._experts.get(a)
            if e is not None and e.wrapup_until is not None:
                e.idle_since = e.wrapup_until
                e.wrapup_until = None
                self._expert_changed(e)
                self._work_experts.add(e.id)
        elif kind == "cooldown":
            if a in self._tasks:
                self._work_tasks.add(a)
            if b in self._experts:
                self._work_experts.add(b)
        elif kind == "lifetime":
            t = self._tasks.get(a)
            if t is not None and t.status in WITH_EXPERT:
                # Lost signalling: nobody reported the call's end. Free the expert.
                log.info("task=%s ended disposition=41 reason=max_task_lifetime", t.id)
                self._end(t, TaskTrigger.EXPIRE, records.MAX_TASK_LIFETIME)

    def _on_recovered(self, ev: Recovered) -> None:
        if ev.failover:
            for eid in sorted(e.id for e in self._experts.values() if e.active or e.pending):
                self._out.append(NotifyExpert(eid, "failover"))
        lost = sorted(tid for tid in ev.lost_tasks if tid in self._tasks)
        for tid in lost:
            t = self._tasks[tid]
            log.info("task=%s ended disposition=27 reason=lost_in_failover", tid)
            self._end(t, TaskTrigger.LOST, records.FAILED_SOFTWARE)
        for key, (at, _kind, _a, _b) in sorted(
            self._timers.items(), key=lambda kv: (kv[1][0], kv[0])
        ):
            self._out.append(SetTimer(key, at))
        log.info(
            "recovered tasks=%d offers=%d timers=%d lost=%d",
            len(self._tasks),
            len(self._offers),
            len(self._timers),
            len(lost),
        )
        self._reconcile()

    # ------------------------------------------------------------------ configuration

    def _install_config(self, config: RoutingConfig) -> None:
        """Swap in a configuration and rebuild the indexes that depend on it."""
        self._config = config
        self._specs = dict(config.experts)
        self._queues = dict(config.queues)
        skills = {q.skill for q in config.queues.values() if q.order == "most_skilled" and q.skill}
        for e in self._experts.values():
            e.indexed = None
        self._free = FreeIndex(self._specs, skills, {q.order for q in config.queues.values()})
        slots: dict[str, list[_Slot]] = {}
        for qid in sorted(config.matches):
            if qid not in self._queues:
                continue
            for step, members in enumerate(config.matches[qid]):
                for eid in members:
                    slots.setdefault(eid, []).append((qid, step))
        self._expert_slots = slots
        self._slot_free = {}

    def _reconcile(self) -> None:
        """Bring live state in line with the configuration; settle everything after."""
        for eid in self._specs:
            if eid not in self._experts:
                self._experts[eid] = ExpertLive(eid)
                self._dirty_experts.add(eid)
        for eid in sorted(self._experts):
            e = self._experts[eid]
            spec = self._specs.get(eid)
            if spec is None or not spec.enabled:
                for oid in list(e.pending):
                    self._withdraw(self._offers[oid], "config")
                if spec is None and not e.active:
                    self._drop_expert(e)
                    continue
            elif e.load() > spec.max_tasks:
                for oid in list(e.pending)[::-1]:
                    if e.load() <= spec.max_tasks:
                        break
                    self._withdraw(self._offers[oid], "config")
            self._reindex(e)
            self._touched.add(eid)
            self._work_experts.add(eid)
        for t in sorted(self._tasks.values(), key=lambda t: t.seq):
            if t.status not in WAITING:
                continue
            spec_q = self._queues.get(t.queue_id)
            if spec_q is None:
                log.info("task=%s rejected reason=queue_removed queue=%s", t.id, t.queue_id)
                self._end(t, TaskTrigger.REJECT, records.TIME_OUT)
                continue
            if t.explicit_priority is None and t.priority != spec_q.priority:
                t.priority = spec_q.priority
                self._dirty_tasks.add(t.id)
            t.step = min(t.step, self._max_step(t.queue_id, spec_q))
            match = self._match(t.queue_id, t.step)
            for eid, oid in list(t.open_offers.items()):
                if eid not in match:
                    self._withdraw(self._offers[oid], "config")
            self._arm_task_timers(t)
            self._rehung(t)
            self._work_tasks.add(t.id)

    # ------------------------------------------------------------------ matching

    def _settle(self) -> None:
        """Match what this event touched: tasks (best first) to untried experts, freed
        experts to their best task, then tasks again allowing experts who had them before."""
        rounds = 0
        while self._work_tasks or self._work_experts:
            rounds += 1
            if rounds > 1000:  # each round consumes capacity; this is a safety net
                raise RuntimeError("routing core did not settle")
            live = self._tasks
            tasks = [live[tid] for tid in self._work_tasks if tid in live]
            if len(tasks) > 1:
                tasks.sort(key=Task.order_key)
            experts = sorted(self._work_experts) if self._work_experts else ()
            self._work_tasks.clear()
            self._work_experts.clear()
            hung = self._hung
            for t in tasks:
                if t.status in WAITING:
                    self._dispatch_task(t, allow_tried=False)
                    self._rehung(t)
            for eid in experts:
                if eid in self._free:
                    self._dispatch_expert(eid)
            for t in tasks:
                if t.cooldowns and t.id in hung:  # only experts who had it before are left
                    self._dispatch_task(t, allow_tried=True)

    def _spare(self, t: Task, spec: QueueSpec) -> float:
        if spec.offer_to is None:
            return math.inf
        return spec.offer_to - len(t.open_offers)

    def _dispatch_task(self, t: Task, allow_tried: bool) -> None:
        if t.status not in WAITING or t.id not in self._tasks:
            return
        spec = self._queues.get(t.queue_id)
        if spec is None:
            return
        spare = self._spare(t, spec)
        if spare <= 0:
            return
        free_in_match = self._slot_free.get((t.queue_id, t.step), 0)
        if free_in_match <= 0:
            return
        want = len(self._free) if spare == math.inf else int(spare)
        now = self._now
        open_offers = t.open_offers
        cooldowns = t.cooldowns

        def eligible(eid: str) -> float | None:
            if eid in open_offers:
                return None
            until = cooldowns.get(eid)
            if until is None:
                return UNTRIED
            return until if now >= until else None

        chosen = choose(
            self._free,
            self._experts,
            spec.order,
            spec.skill,
            self._match(t.queue_id, t.step),
            free_in_match,
            want,
            eligible if open_offers or cooldowns else None,  # None: nobody had it yet
            allow_tried,
            t.id,
            t.offer_n,
            t.attributes,
            self._rr.get(t.queue_id),
        )
        if not chosen:
            return
        for eid in chosen:
            if not self._specs[eid].may_decline:
                self._assign_direct(t, self._experts[eid], spec)
                return
        for eid in chosen:
            self._make_offer(t, self._experts[eid], spec)

    def _dispatch_expert(self, eid: str) -> None:
        """A free expert takes the best hungry task among every queue they serve."""
        e = self._experts.get(eid)
        spec = self._specs.get(eid)
        if e is None or spec is None:
            return
        now = self._now
        while eid in self._free:
            best_key: tuple[Any, ...] | None = None
            for slot in self._expert_slots.get(eid, ()):
                lst = self._hungry.get(slot)
                if not lst:
                    continue
                for key in lst:
                    if best_key is not None and key >= best_key:
                        break
                    t = self._tasks[key[3]]
                    if eid in t.open_offers:
                        continue
                    until = t.cooldowns.get(eid)
                    if until is not None and now <= until:
                        if now == until:
                            # Had it this very moment: the task's own pass decides whether it
                            # comes back to earlier experts (nobody untried is free).
                            self._work_tasks.add(t.id)
                        continue  # in cooldown, or had it this very moment
                    best_key = key
                    break
            if best_key is None:
                return
            t = self._tasks[best_key[3]]
            q = self._queues[t.queue_id]
            if not spec.may_decline:
                self._assign_direct(t, e, q)
            else:
                self._make_offer(t, e, q)

    def _make_offer(self, t: Task, e: ExpertLive, spec: QueueSpec) -> None:
        now = self._now
        t.offer_n += 1
        oid = f"{t.id}.{t.offer_n}"
        expires = now + spec.offer_timeout
        o = Offer(oid, t.id, e.id, t.queue_id, t.code, now, expires)
        self._offers[oid] = o
        t.open_offers[e.id] = oid
        e.pending[oid] = t.id
        t.status = advance_task(t.status, TaskTrigger.OFFER)
        if spec.order == "round_robin":
            self._rr[t.queue_id] = e.id
            self._dirty_meta = True
        self._set_timer(f"offer:{oid}", expires, "offer", oid, "")
        self._out.append(SendOffer(oid, t.id, e.id, t.code, expires))
        self._emit(
            "offer.created",
            offer_id=oid,
            task_id=t.id,
            expert_id=e.id,
            queue_id=t.queue_id,
            expires_at=expires,
        )
        self._dirty_offers.add(oid)
        self._dirty_tasks.add(t.id)
        self._rehung(t)
        self._expert_changed(e)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "task=%s offered expert=%s offer=%s queue=%s order=%s step=%d",
                t.id,
                e.id,
                oid,
                t.queue_id,
                spec.order,
                t.step,
            )

    def _assign_direct(self, t: Task, e: ExpertLive, spec: QueueSpec) -> None:
        """An expert who may not decline gets the task at once, with a notice."""
        now = self._now
        t.offer_n += 1
        oid = f"{t.id}.{t.offer_n}"
        o = Offer(oid, t.id, e.id, t.queue_id, t.code, now, None, notice_only=True)
        o.status = advance_offer(o.status, OfferTrigger.ACCEPT)
        o.ended_at = now
        t.history.append(_history(o))
        self._closed_now[oid] = o
        self._remember_closed(o)
        self._dirty_offers.add(oid)
        if spec.order == "round_robin":
            self._rr[t.queue_id] = e.id
            self._dirty_meta = True
        self._out.append(SendOffer(oid, t.id, e.id, t.code, None, notice_only=True))
        self._emit(
            "offer.created",
            offer_id=oid,
            task_id=t.id,
            expert_id=e.id,
            queue_id=t.queue_id,
            notice_only=True,
        )
        self._emit("offer.accepted", offer_id=oid, task_id=t.id, expert_id=e.id)
        if t.open_offers:
            self._withdraw_task_offers(t, "taken")
        log.info("task=%s assigned expert=%s reason=may_not_decline", t.id, e.id)
        self._assign(t, e, self._specs[e.id].phone)

    def _assign(self, t: Task, e: ExpertLive, label: str) -> None:
        now = self._now
        t.status = advance_task(t.status, TaskTrigger.ACCEPT)
        t.expert_id = e.id
        t.label = label
        t.assigned_at = now
        e.active[t.id] = None
        e.handled += 1
        e.no_answer = 0
        self._cancel_task_timers(t)
        self._arm_lifetime(t)
        self._rehung(t)
        self._dirty_tasks.add(t.id)
        self._expert_changed(e)
        self._out.append(ReturnLabel(t.id, label, e.id))
        self._out.append(WriteRecord("rcd", records.rcd(t, label, e.id, now)))
        self._emit("task.assigned", task_id=t.id, expert_id=e.id, queue_id=t.queue_id, label=label)

    # ------------------------------------------------------------------ offers

    def _refuse(self, offer_id: str) -> None:
        eid = self._recent_closed.get(offer_id)
        if eid is None:  # not remembered (e.g. after a restore): the task's history knows
            owner = self._tasks.get(offer_id.rpartition(".")[0])
            for h in owner.history if owner is not None else ():
                if h["offer_id"] == offer_id:
                    eid = h["expert_id"]
                    break
        if eid is None:
            self._out.append(AnswerRefused(offer_id, None, "unknown"))
        else:
            self._out.append(AnswerRefused(offer_id, eid, "closed"))

    def _close_offer(self, o: Offer, trigger: OfferTrigger) -> None:
        now = self._now
        o.status = advance_offer(o.status, trigger)
        o.ended_at = now
        del self._offers[o.id]
        self._closed_now[o.id] = o
        self._remember_closed(o)
        self._dirty_offers.add(o.id)
        self._drop_timer(f"offer:{o.id}", cancel=True)
        t = self._tasks[o.task_id]
        t.open_offers.pop(o.expert_id, None)
        t.history.append(_history(o))
        if t.status is TaskStatus.OFFERED and not t.open_offers:
            t.status = advance_task(t.status, TaskTrigger.OFFERS_CLOSED)
        self._dirty_tasks.add(t.id)
        e = self._experts.get(o.expert_id)
        if trigger is OfferTrigger.ACCEPT:
            # ``_assign`` follows at once: it re-indexes the task and the expert (whose load
            # does not change: the pending offer becomes an active task).
            if e is not None:
                e.pending.pop(o.id, None)
            return
        self._rehung(t)
        if e is not None:
            e.pending.pop(o.id, None)
            self._expert_changed(e)
            self._work_experts.add(e.id)
        if t.status in WAITING:
            self._work_tasks.add(t.id)

    def _withdraw(self, o: Offer, reason: Any) -> None:
        self._close_offer(o, OfferTrigger.WITHDRAW)
        self._out.append(WithdrawOffer(o.id, o.task_id, o.expert_id, o.code, reason))
        self._emit(
            "offer.withdrawn",
            offer_id=o.id,
            task_id=o.task_id,
            expert_id=o.expert_id,
            reason=reason,
        )

    def _withdraw_task_offers(self, t: Task, reason: Any) -> None:
        for oid in sorted(t.open_offers.values()):
            self._withdraw(self._offers[oid], reason)

    def _expire_offer(self, o: Offer) -> None:
        t = self._tasks[o.task_id]
        self._close_offer(o, OfferTrigger.EXPIRE)
        self._out.append(WithdrawOffer(o.id, o.task_id, o.expert_id, o.code, "timeout"))
        self._emit("offer.timeout", offer_id=o.id, task_id=t.id, expert_id=o.expert_id)
        self._cooldown(t, o.expert_id)
        e = self._experts.get(o.expert_id)
        if e is None:
            return
        e.no_answer += 1
        self._dirty_experts.add(e.id)
        spec = self._queues.get(o.queue_id)
        limit = spec.max_no_answer if spec is not None else 0
        if limit > 0 and e.no_answer >= limit and e.presence == Presence.AVAILABLE:
            log.info(
                "expert=%s set away reason=max_no_answer count=%d queue=%s",
                e.id,
                e.no_answer,
                o.queue_id,
            )
            self._out.append(NotifyExpert(e.id, "set_away"))
            self._set_presence(e, Presence.AWAY, "max_no_answer")

    def _cooldown(self, t: Task, eid: str) -> None:
        """Remember that ``eid`` had this task; keep them off it for ``decline_cooldown``."""
        spec = self._queues.get(t.queue_id) or self._retired_queues.get(t.queue_id)
        pause = spec.decline_cooldown if spec is not None else 0.0
        until = self._now + pause
        t.cooldowns[eid] = until
        self._dirty_tasks.add(t.id)
        if pause > 0:
            self._set_timer(f"cooldown:{t.id}:{eid}", until, "cooldown", t.id, eid)

    def _remember_closed(self, o: Offer) -> None:
        self._recent_closed[o.id] = o.expert_id
        if len(self._recent_closed) > RECENT_CLOSED_OFFERS:
            self._recent_closed.popitem(last=False)

    # ------------------------------------------------------------------ task outcomes

    def _max_wait(self, t: Task) -> None:
        spec = self._queues[t.queue_id]
        action = spec.on_max_wait
        if action.kind == "overflow" and action.target in self._queues:
            self._overflow(t, action.target)
        elif action.kind == "label" and action.target:
            self._withdraw_task_offers(t, "overflow")
            log.info(
                "task=%s fallback label=%s reason=max_wait queue=%s",
                t.id,
                action.target,
                t.queue_id,
            )
            t.label = action.target
            self._out.append(ReturnLabel(t.id, action.target, None))
            self._out.append(WriteRecord("rcd", records.rcd(t, action.target, None, self._now)))
            self._end(t, TaskTrigger.FALLBACK, records.REDIRECTED)
        else:
            reason = "max_wait" if action.kind == "reject" else "overflow_target_missing"
            log.info("task=%s rejected reason=%s queue=%s", t.id, reason, t.queue_id)
            self._end(t, TaskTrigger.REJECT, records.TIME_OUT)

    def _overflow(self, t: Task, target: str) -> None:
        self._withdraw_task_offers(t, "overflow")
        self._cancel_task_timers(t, keep_cooldowns=True)
        source = t.queue_id
        t.status = advance_task(t.status, TaskTrigger.OVERFLOW)
        spec = self._queues[target]
        t.queue_id = target
        t.queues.append(target)
        t.enqueued_at = self._now
        t.step = 0
        if t.explicit_priority is None:
            t.priority = spec.priority
        self._dirty_tasks.add(t.id)
        log.info("task=%s overflowed from=%s to=%s reason=max_wait", t.id, source, target)
        self._emit(
            "task.moved", task_id=t.id, from_queue=source, queue_id=target, reason="max_wait"
        )
        self._emit("task.queued", task_id=t.id, queue_id=target, priority=t.priority)
        self._arm_task_timers(t)
        self._rehung(t)
        self._work_tasks.add(t.id)

    def _escalate(self, t: Task) -> None:
        spec = self._queues[t.queue_id]
        waited = self._now - t.enqueued_at + TIMER_TOLERANCE
        top = self._max_step(t.queue_id, spec)
        step = t.step
        for i in range(t.step + 1, top + 1):
            if _step_after(spec, i) <= waited:
                step = i
        if step > t.step:
            t.step = step
            self._dirty_tasks.add(t.id)
            self._rehung(t)
            self._work_tasks.add(t.id)
            log.info("task=%s escalated queue=%s step=%d", t.id, t.queue_id, step)
            self._emit("task.escalated", task_id=t.id, queue_id=t.queue_id, step=step)
        self._arm_escalation(t, spec)

    def _end(self, t: Task, trigger: TaskTrigger, disposition: int) -> None:
        now = self._now
        if t.open_offers:
            self._withdraw_task_offers(t, "ended")
        was_connected = t.connected_at is not None
        t.status = advance_task(t.status, trigger)
        t.ended_at = now
        t.call_disposition = disposition
        if t.id in self._task_timers:
            self._cancel_task_timers(t)
        if t.expert_id is not None:
            self._drop_timer(f"lifetime:{t.id}", cancel=True)
        self._rehung(t)
        if t.expert_id is not None:
            e = self._experts.get(t.expert_id)
            if e is not None and t.id in e.active:
                del e.active[t.id]
                spec = self._queues.get(t.queue_id) or self._retired_queues.get(t.queue_id)
                wrap = spec.wrap_up if spec is not None else 0.0
                if wrap > 0 and (t.status is TaskStatus.COMPLETED or was_connected):
                    t.work_time = wrap
                    until = max(e.wrapup_until or 0.0, now + wrap)
                    e.wrapup_until = until
                    self._set_timer(f"wrapup:{e.id}", until, "wrapup", e.id, "")
                elif e.wrapup_until is None:
                    e.idle_since = now
                self._expert_changed(e)
                self._work_experts.add(e.id)
                if e.id not in self._specs and not e.active:
                    self._drop_expert(e)
        self._release_code(t)
        del self._tasks[t.id]
        self._ended_now[t.id] = t
        self._dirty_tasks.add(t.id)
        times = records.timings(t)
        self._out.append(WriteRecord("tcd", records.tcd(t, disposition, times)))
        self._emit(
            f"task.{t.status}",
            task_id=t.id,
            queue_id=t.queue_id,
            expert_id=t.expert_id,
            call_disposition=disposition,
        )
        record = records.task_record(t, disposition, times)
        self._out.append(Emit(TASK_RECORD, record))  # type: ignore[arg-type]

    # ------------------------------------------------------------------ experts

    def _set_presence(self, e: ExpertLive, status: Any, source: str) -> None:
        previous = e.presence
        if previous == status:
            return
        e.presence = status
        if status == Presence.AVAILABLE:
            e.idle_since = self._now
            e.no_answer = 0
            self._work_experts.add(e.id)
        else:
            for oid in list(e.pending):
                self._withdraw(self._offers[oid], "presence")
        self._expert_changed(e)
        self._emit(
            "expert.presence", expert_id=e.id, status=status, previous=previous, source=source
        )

    def _drop_expert(self, e: ExpertLive) -> None:
        if e.indexed is not None:
            self._free.remove(e)
            self._count_free(e.id, -1)
        self._experts.pop(e.id, None)
        self._drop_timer(f"wrapup:{e.id}", cancel=True)
        self._dirty_experts.add(e.id)

    def _reindex(self, e: ExpertLive) -> None:
        """Keep the expert in the free orderings exactly while they can take one more offer."""
        spec = self._specs.get(e.id)
        if (
            spec is not None
            and spec.enabled
            and e.presence == Presence.AVAILABLE
            and e.wrapup_until is None
            and len(e.active) + len(e.pending) < spec.max_tasks
        ):
            if e.indexed is None:
                self._free.add(e)
                self._count_free(e.id, 1)
            elif not self._free.same_keys(e):
                self._free.add(e)
        elif e.indexed is not None:
            self._free.remove(e)
            self._count_free(e.id, -1)

    def _count_free(self, eid: str, delta: int) -> None:
        counts = self._slot_free
        for slot in self._expert_slots.get(eid, ()):
            counts[slot] = counts.get(slot, 0) + delta

    def _expert_changed(self, e: ExpertLive) -> None:
        self._dirty_experts.add(e.id)
        self._touched.add(e.id)
        self._reindex(e)

    def _derive(self, e: ExpertLive) -> str:
        spec = self._specs.get(e.id)
        if spec is None or not spec.enabled:
            return "offline"
        if e.active:
            return "busy"
        if e.wrapup_until is not None:
            return "wrap_up"
        if e.presence != Presence.AVAILABLE:
            return e.presence
        if e.pending:
            return "reserved"
        return "available"

    def _announce_states(self) -> None:
        if not self._touched:
            return
        assert self._config is not None
        at = ""
        for eid in sorted(self._touched):
            e = self._experts.get(eid)
            if e is None:
                continue
            state = self._derive(e)
            if state != e.state:
                at = at or records.iso(self._now) or ""
                rec: ExpertStateRecord = {
                    "expert_id": eid,
                    "state": state,  # type: ignore[typeddict-item]
                    "previous": e.state,  # type: ignore[typeddict-item]
                    "at": at,
                    "config_version": self._config.version,
                }
                e.state = state
                self._dirty_experts.add(eid)
                self._out.append(Emit(EXPERT_STATE, rec))  # type: ignore[arg-type]
        self._touched.clear()

    # ------------------------------------------------------------------ indexes & timers

    def _match(self, queue_id: str, step: int) -> frozenset[str]:
        assert self._config is not None
        steps = self._config.matches.get(queue_id)
        if not steps:
            return frozenset()
        return steps[min(step, len(steps) - 1)]

    def _max_step(self, queue_id: str, spec: QueueSpec) -> int:
        assert self._config is not None
        steps = self._config.matches.get(queue_id) or ()
        return max(0, min(len(spec.escalate), len(steps) - 1))

    def _rehung(self, t: Task) -> None:
        """Keep the task in its (queue, step) ordering exactly while it wants more offers."""
        want: _Slot | None = None
        if t.status in WAITING and t.id in self._tasks:
            spec = self._queues.get(t.queue_id)
            if spec is not None and self._spare(t, spec) > 0:
                want = (t.queue_id, t.step)
        current = self._hung.get(t.id)
        if want is None and current is None:
            return
        key = t.order_key()
        if current is not None:
            if want is not None and current == (want, key):
                return
            slot, old_key = current
            self._hungry[slot].remove(old_key)
            del self._hung[t.id]
        if want is not None:
            lst = self._hungry.get(want)
            if lst is None:
                lst = self._hungry[want] = SortedList()
            lst.add(key)
            self._hung[t.id] = (want, key)

    def _set_timer(
        self, key: str, at: float, kind: str, a: str, b: str, quiet: bool = False
    ) -> None:
        entry = (at, kind, a, b)
        if self._timers.get(key) == entry:
            return
        self._timers[key] = entry
        if kind in ("maxwait", "escalate", "cooldown"):
            self._task_timers.setdefault(a, {})[key] = None
        if not quiet:
            self._out.append(SetTimer(key, at))

    def _drop_timer(self, key: str, cancel: bool = False) -> None:
        entry = self._timers.pop(key, None)
        if entry is None:
            return
        if entry[1] in ("maxwait", "escalate", "cooldown"):
            keys = self._task_timers.get(entry[2])
            if keys is not None:
                keys.pop(key, None)
                if not keys:
                    del self._task_timers[entry[2]]
        if cancel:
            self._out.append(CancelTimer(key))

    def _cancel_task_timers(self, t: Task, keep_cooldowns: bool = False) -> None:
        for key in sorted(self._task_timers.get(t.id, ())):
            if keep_cooldowns and self._timers[key][1] == "cooldown":
                continue
            self._drop_timer(key, cancel=True)

    def _arm_lifetime(self, t: Task, quiet: bool = False) -> None:
        """The bound of a task with its expert: ``max_task_lifetime`` after its creation."""
        spec = self._queues.get(t.queue_id) or self._retired_queues.get(t.queue_id)
        lifetime = spec.max_task_lifetime if spec is not None else MAX_TASK_LIFETIME
        at = max(self._now, t.created_at + lifetime)
        self._set_timer(f"lifetime:{t.id}", at, "lifetime", t.id, "", quiet=quiet)

    def _arm_task_timers(self, t: Task, quiet: bool = False) -> None:
        """Max wait and the next escalation step (counted from entering the current queue)
        and the end of every running cooldown, for a waiting task."""
        spec = self._queues.get(t.queue_id)
        if spec is None:
            return
        at = max(self._now, t.enqueued_at + spec.max_wait)
        self._set_timer(f"maxwait:{t.id}", at, "maxwait", t.id, "", quiet=quiet)
        if spec.escalate or len(self._task_timers.get(t.id, ())) > 1 + len(t.cooldowns):
            self._arm_escalation(t, spec, quiet=quiet)  # (or drop a step the queue lost)
        for eid, until in t.cooldowns.items():
            if until > self._now:
                self._set_timer(f"cooldown:{t.id}:{eid}", until, "cooldown", t.id, eid, quiet=quiet)

    def _arm_escalation(self, t: Task, spec: QueueSpec, quiet: bool = False) -> None:
        nxt = t.step + 1
        key: str | None = None
        if nxt <= self._max_step(t.queue_id, spec):
            key = f"escalate:{t.id}:{nxt}"
        for old in list(self._task_timers.get(t.id, ())):
            if old != key and self._timers[old][1] == "escalate":
                self._drop_timer(old, cancel=not quiet)
        if key is not None:
            at = max(self._now, t.enqueued_at + _step_after(spec, nxt))
            self._set_timer(key, at, "escalate", t.id, "", quiet=quiet)

    # ------------------------------------------------------------------ codes, dirt, feed

    def _alloc_code(self, task_id: str) -> str:
        """A short code unique among live tasks, derived from the task id (deterministic).

        4 digits while fewer than 90% of them are taken, then 5, and so on.
        """
        width = 4
        h = zlib.crc32(task_id.encode())
        while True:
            low = 10 ** (width - 1)
            span = 9 * low
            if self._code_counts.get(width, 0) < span * 0.9:
                for i in range(span):
                    code = str(low + (h + i) % span)
                    if code not in self._codes:
                        self._take_code(code, task_id)
                        return code
            width += 1

    def _take_code(self, code: str, task_id: str) -> None:
        self._codes[code] = task_id
        self._code_counts[len(code)] = self._code_counts.get(len(code), 0) + 1

    def _release_code(self, t: Task) -> None:
        if self._codes.get(t.code) == t.id:
            del self._codes[t.code]
            self._code_counts[len(t.code)] -= 1

    def _emit(self, type_: str, **data: Any) -> None:
        self._out.append(Emit(type_, data))


_TEXT_OR_NONE = (str, type(None))

# Field types an outside caller could get wrong, per event type (the handlers check values
# and ids). One check per type rather than a loop over field names: it runs for every event.
_WELL_FORMED: dict[type, Callable[[Any], bool]] = {
    ConfigChanged: lambda ev: isinstance(ev.config, RoutingConfig),
    PresenceChanged: lambda ev: (
        isinstance(ev.expert_id, str) and isinstance(ev.status, str) and isinstance(ev.source, str)
    ),
    TaskCreated: lambda ev: (
        isinstance(ev.task_id, str)
        and isinstance(ev.queue_id, str)
        and isinstance(ev.channel, str)
        and isinstance(ev.attributes, dict)
        and isinstance(ev.caller, _TEXT_OR_NONE)
        and isinstance(ev.dialed_number, _TEXT_OR_NONE)
        and isinstance(ev.external_id, _TEXT_OR_NONE)
    ),
    OfferAccepted: lambda ev: isinstance(ev.offer_id, str) and isinstance(ev.phone, _TEXT_OR_NONE),
    OfferDeclined: lambda ev: isinstance(ev.offer_id, str),
    CallConnected: lambda ev: isinstance(ev.task_id, str),
    CallEnded: lambda ev: isinstance(ev.task_id, str),
    TaskAbandoned: lambda ev: isinstance(ev.task_id, str),
    TaskFailed: lambda ev: isinstance(ev.task_id, str),
    DeliveryFailed: lambda ev: isinstance(ev.task_id, str) and isinstance(ev.disposition, int),
    TimerFired: lambda ev: isinstance(ev.key, str),
    Recovered: lambda ev: (
        all(isinstance(t, str) for t in ev.lost_tasks) and isinstance(ev.failover, bool)
    ),
}


def _step_after(spec: QueueSpec, step: int) -> float:
    """Seconds in queue before escalation ``step`` applies (never earlier than the step before)."""
    return max((s.after for s in spec.escalate[:step]), default=0.0)


_OUTCOMES: dict[OfferStatus, str] = {
    OfferStatus.ACCEPTED: "accepted",
    OfferStatus.DECLINED: "declined",
    OfferStatus.TIMEOUT: "timeout",
    OfferStatus.WITHDRAWN: "withdrawn",
}


def _history(o: Offer) -> dict[str, Any]:
    outcome = _OUTCOMES.get(o.status, "open")
    return {
        "offer_id": o.id,
        "expert_id": o.expert_id,
        "queue_id": o.queue_id,
        "created_at": o.created_at,
        "ended_at": o.ended_at,
        "outcome": outcome,
    }


_HANDLERS: dict[type, Any] = {
    ConfigChanged: RoutingCore._on_config,
    PresenceChanged: RoutingCore._on_presence,
    TaskCreated: RoutingCore._on_task_created,
    OfferAccepted: RoutingCore._on_accept,
    OfferDeclined: RoutingCore._on_decline,
    CallConnected: RoutingCore._on_connected,
    CallEnded: RoutingCore._on_ended,
    TaskAbandoned: RoutingCore._on_abandoned,
    TaskFailed: RoutingCore._on_failed,
    DeliveryFailed: RoutingCore._on_delivery_failed,
    TimerFired: RoutingCore._on_timer,
    Recovered: RoutingCore._on_recovered,
}
