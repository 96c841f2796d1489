"""Where a task goes next: max wait (overflow, fallback label, reject), escalation, a failed
delivery (back to its queue, the expert kept off it), and the end of a task (TCD, wrap-up,
freeing its expert)."""

from __future__ import annotations

import logging

from expertline.records.feed import TASK_RECORD
from expertline.routing import records
from expertline.routing.commands import Emit, ReturnLabel, WriteRecord
from expertline.routing.live import Task
from expertline.routing.offers import Offers
from expertline.routing.state import TIMER_TOLERANCE, _step_after
from expertline.routing.states import TASK, TaskStatus, TaskTrigger
from expertline.routing.timers import LIFETIME_TIMER, WRAP_UP_TIMER, TimerKey

log = logging.getLogger("expertline.routing")

# Members read on every lifecycle, bound once: reading an enum member as a class attribute
# (``TaskTrigger.OFFER``) costs about 0.2 µs on Python 3.11.
_COMPLETED = TaskStatus.COMPLETED


class Outcomes(Offers):
    """Max wait, escalation, failed deliveries and the end of tasks."""

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
        t.status = TASK.fire(t.status, TaskTrigger.OVERFLOW)
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
        disposition = int(disposition)  # the plain number: records and rows carry no enums
        now = self._now
        if t.open_offers:
            self._withdraw_task_offers(t, "ended")
        was_connected = t.connected_at is not None
        t.status = TASK.fire(t.status, trigger)
        t.ended_at = now
        t.call_disposition = disposition
        if t.id in self._task_timers:
            self._cancel_task_timers(t)
        if t.expert_id is not None:
            self._drop_timer(TimerKey(LIFETIME_TIMER, t.id), cancel=True)
        self._rehung(t)
        if t.expert_id is not None:
            e = self._experts.get(t.expert_id)
            if e is not None and t.id in e.active:
                del e.active[t.id]
                spec = self._queues.get(t.queue_id) or self._retired_queues.get(t.queue_id)
                wrap = spec.wrap_up if spec is not None else 0.0
                if wrap > 0 and (t.status is _COMPLETED or was_connected):
                    t.work_time = wrap
                    until = max(e.wrapup_until or 0.0, now + wrap)
                    e.wrapup_until = until
                    self._set_timer(TimerKey(WRAP_UP_TIMER, e.id), until)
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

    def _delivery_failed(self, t: Task, disposition: int) -> None:
        """The expert's phone did not take the call (19/8): an ``attempt`` record, the task
        back in its queue, the expert kept off it for a while (or taken out)."""
        now = self._now
        eid = t.expert_id
        assert eid is not None
        t.attempts.append({"expert_id": eid, "disposition": disposition, "at": now})
        self._out.append(
            WriteRecord(
                "attempt",
                {
                    "task_id": t.id,
                    "peripheral_call_key": t.code,
                    "router_call_key": t.external_id,
                    "dialed_number": t.dialed_number,
                    "ani": t.caller,
                    "call_disposition": disposition,
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
            e.delivery_failures += 1
            self._expert_changed(e)
            self._work_experts.add(eid)
        t.status = TASK.fire(t.status, TaskTrigger.DELIVERY_FAILED)
        self._drop_timer(TimerKey(LIFETIME_TIMER, t.id), cancel=True)
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
            disposition,
        )
        self._emit(
            "task.requeued",
            task_id=t.id,
            queue_id=t.queue_id,
            expert_id=eid,
            disposition=disposition,
        )
        self._emit("task.queued", task_id=t.id, queue_id=t.queue_id, priority=t.priority)
        # Not this expert again for a while (a phone that fails at once would otherwise be
        # called again at once); after too many failures in a row, the expert is taken out.
        spec = self._queues.get(t.queue_id) or self._retired_queues.get(t.queue_id)
        self._cooldown(t, eid, spec.delivery_cooldown if spec is not None else 0.0)
        limit = spec.max_delivery_failures if spec is not None else 0
        if e is not None and limit > 0 and e.delivery_failures >= limit:
            self._take_out(e, "phone_failed", e.delivery_failures, t.queue_id)
        if t.queue_id not in self._queues:
            log.info("task=%s rejected reason=queue_removed queue=%s", t.id, t.queue_id)
            self._end(t, TaskTrigger.REJECT, records.TIME_OUT)
            return
        self._arm_task_timers(t)
        self._rehung(t)
        self._work_tasks.add(t.id)
