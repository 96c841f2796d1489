"""The core's event handlers: one method per event type, and the field checks run first."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from expertline.routing import records
from expertline.routing.commands import (
    AnswerRefused,
    ConfirmAccepted,
    NotifyExpert,
    SetTimer,
)
from expertline.routing.events import (
    CallConnected,
    CallEnded,
    ConfigChanged,
    DeliveryFailed,
    OfferAccepted,
    OfferDeclined,
    PresenceChanged,
    Recovered,
    TaskAbandoned,
    TaskCreated,
    TaskFailed,
    TimerFired,
)
from expertline.routing.live import Task
from expertline.routing.model import Presence, RoutingConfig
from expertline.routing.phones import accepted_label
from expertline.routing.reconcile import Reconcile
from expertline.routing.state import CHANNELS, PRESENCES, TIMER_TOLERANCE
from expertline.routing.states import (
    TASK,
    WAITING,
    WITH_EXPERT,
    OfferTrigger,
    TaskTrigger,
)
from expertline.routing.timers import TimerKey, TimerKind

log = logging.getLogger("expertline.routing")

# Members read on every lifecycle, bound once: reading an enum member as a class attribute
# (``TaskTrigger.OFFER``) costs about 0.2 µs on Python 3.11.
_ACCEPT_OFFER = OfferTrigger.ACCEPT
_CONNECT = TaskTrigger.CONNECT
_END = TaskTrigger.END


class Handlers(Reconcile):
    """What each event does."""

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
        self._close_offer(o, _ACCEPT_OFFER)
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
        if t is None or not TASK.allows(t.status, _CONNECT):
            return
        t.status = TASK.fire(t.status, _CONNECT)
        t.connected_at = self._now
        e = self._experts.get(t.expert_id or "")
        if e is not None and e.delivery_failures:
            e.delivery_failures = 0  # the phone works
            self._dirty_experts.add(e.id)
        self._dirty_tasks.add(t.id)
        self._emit("task.connected", task_id=t.id, expert_id=t.expert_id)

    def _on_ended(self, ev: CallEnded) -> None:
        t = self._tasks.get(ev.task_id)
        if t is None or not TASK.allows(t.status, _END):
            return
        if ev.handed_off and t.connected_at is None:
            t.connected_at = self._now  # left at the label: ring until now, no talk time
        self._end(t, _END, records.handled_disposition(t))

    def _on_abandoned(self, ev: TaskAbandoned) -> None:
        t = self._tasks.get(ev.task_id)
        if t is None or not TASK.allows(t.status, TaskTrigger.ABANDON):
            return
        self._end(t, TaskTrigger.ABANDON, records.abandon_disposition(t))

    def _on_failed(self, ev: TaskFailed) -> None:
        t = self._tasks.get(ev.task_id)
        if t is None or not TASK.allows(t.status, TaskTrigger.FAIL):
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
            or not TASK.allows(t.status, TaskTrigger.DELIVERY_FAILED)
        ):
            return
        self._delivery_failed(t, ev.disposition)

    def _on_timer(self, ev: TimerFired) -> None:
        key = ev.key
        at = self._timers.get(key)
        if at is None:
            return
        if self._now + TIMER_TOLERANCE < at:
            return  # an earlier setting of a moved timer
        self._drop_timer(key)
        _TIMER_HANDLERS[key.kind](self, key)

    def _offer_due(self, key: TimerKey) -> None:
        o = self._offers.get(key.subject)
        if o is not None:
            self._expire_offer(o)

    def _max_wait_due(self, key: TimerKey) -> None:
        t = self._tasks.get(key.subject)
        if t is not None and t.status in WAITING:
            self._max_wait(t)

    def _escalation_due(self, key: TimerKey) -> None:
        t = self._tasks.get(key.subject)
        if t is not None and t.status in WAITING:
            self._escalate(t)

    def _wrap_up_due(self, key: TimerKey) -> None:
        e = self._experts.get(key.subject)
        if e is not None and e.wrapup_until is not None:
            e.idle_since = e.wrapup_until
            e.wrapup_until = None
            self._expert_changed(e)
            self._work_experts.add(e.id)

    def _cooldown_due(self, key: TimerKey) -> None:
        if key.subject in self._tasks:
            self._work_tasks.add(key.subject)
        if key.detail in self._experts:
            self._work_experts.add(key.detail)

    def _lifetime_due(self, key: TimerKey) -> None:
        t = self._tasks.get(key.subject)
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
        for key, at in sorted(self._timers.items(), key=lambda kv: (kv[1], kv[0])):
            self._out.append(SetTimer(key, at))
        log.info(
            "recovered tasks=%d offers=%d timers=%d lost=%d",
            len(self._tasks),
            len(self._offers),
            len(self._timers),
            len(lost),
        )
        self._reconcile()


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
    TimerFired: lambda ev: isinstance(ev.key, TimerKey) and isinstance(ev.key.kind, TimerKind),
    Recovered: lambda ev: (
        all(isinstance(t, str) for t in ev.lost_tasks) and isinstance(ev.failover, bool)
    ),
}

_HANDLERS: dict[type, Any] = {
    ConfigChanged: Handlers._on_config,
    PresenceChanged: Handlers._on_presence,
    TaskCreated: Handlers._on_task_created,
    OfferAccepted: Handlers._on_accept,
    OfferDeclined: Handlers._on_decline,
    CallConnected: Handlers._on_connected,
    CallEnded: Handlers._on_ended,
    TaskAbandoned: Handlers._on_abandoned,
    TaskFailed: Handlers._on_failed,
    DeliveryFailed: Handlers._on_delivery_failed,
    TimerFired: Handlers._on_timer,
    Recovered: Handlers._on_recovered,
}

# What a due timer does, by kind.
_TIMER_HANDLERS: dict[TimerKind, Callable[[Handlers, TimerKey], None]] = {
    TimerKind.OFFER: Handlers._offer_due,
    TimerKind.MAX_WAIT: Handlers._max_wait_due,
    TimerKind.ESCALATE: Handlers._escalation_due,
    TimerKind.WRAP_UP: Handlers._wrap_up_due,
    TimerKind.COOLDOWN: Handlers._cooldown_due,
    TimerKind.LIFETIME: Handlers._lifetime_due,
}
