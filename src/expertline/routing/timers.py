"""The core's timers: one entry per key, armed and dropped as tasks and experts move.

Each timer is named by its key; the runtime fires ``TimerFired(key)`` at the time given by
``SetTimer``. Setting a key again moves it; a task's timers are also indexed by task id so
they can be cancelled together when it leaves its queue.
"""

from __future__ import annotations

import logging

from expertline.routing.commands import CancelTimer, SetTimer
from expertline.routing.live import ExpertLive, Task
from expertline.routing.model import MAX_TASK_LIFETIME, QueueSpec
from expertline.routing.state import CoreState, _step_after

log = logging.getLogger("expertline.routing")


class CoreTimers(CoreState):
    """Arming, moving and dropping the core's timers."""

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

    def _drop_expert(self, e: ExpertLive) -> None:
        if e.indexed is not None:
            self._free.remove(e)
            self._count_free(e.id, -1)
        self._experts.pop(e.id, None)
        self._drop_timer(f"wrapup:{e.id}", cancel=True)
        self._dirty_experts.add(e.id)
