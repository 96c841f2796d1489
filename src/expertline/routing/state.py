"""The routing core's live state and the indexes kept over it (no decisions here).

``CoreState`` holds the tasks, offers and experts, the dirty sets the runtime persists, the
hungry-task orderings per (queue, escalation step), the free-expert index, task codes, and
the derived expert state announced on the feed. The layers above it (timers, offers,
outcomes, matching, reconciliation, event handlers) add behaviour; ``core.RoutingCore`` is
the façade.
"""

from __future__ import annotations

import logging
import math
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Final

from sortedcontainers import SortedList  # type: ignore[import-untyped]

from expertline.records.feed import EXPERT_STATE, ExpertStateRecord
from expertline.routing import records
from expertline.routing.commands import CancelTimer, Command, Emit, SetTimer
from expertline.routing.live import ExpertLive, Offer, Task
from expertline.routing.model import (
    AVAILABLE,
    MAX_TASK_LIFETIME,
    ExpertSpec,
    Presence,
    QueueSpec,
    RoutingConfig,
)
from expertline.routing.states import WAITING
from expertline.routing.strategies import FreeIndex
from expertline.routing.timers import (
    COOLDOWN_TIMER,
    ESCALATE_TIMER,
    LIFETIME_TIMER,
    MAX_WAIT_TIMER,
    TASK_TIMERS,
    WRAP_UP_TIMER,
    TimerKey,
)

log = logging.getLogger("expertline.routing")

PRESENCES = frozenset(Presence)
CHANNELS = frozenset({"voice", "chat"})
TIMER_TOLERANCE = 0.001  # a timer fired this much early still counts (clock rounding)
RECENT_CLOSED_OFFERS = 50_000  # closed offers remembered to answer late replies with "closed"

_Slot = tuple[str, int]  # (queue id, escalation step)


@dataclass(slots=True)
class Dirty:
    """What changed since the previous ``drain_dirty``: persist these before any effect."""

    tasks: Final[frozenset[str]]
    offers: Final[frozenset[str]]
    experts: Final[frozenset[str]]
    meta: Final[bool]

    def __bool__(self) -> bool:
        return bool(self.tasks or self.offers or self.experts or self.meta)


@dataclass(slots=True)
class Census:
    """What is live now: tasks by status, waiting tasks per queue (count and the oldest's
    creation time), configured experts by their announced state, open offers."""

    tasks: Final[dict[str, int]]
    waiting: Final[dict[str, tuple[int, float]]]
    experts: Final[dict[str, int]]
    open_offers: Final[int]


_CLEAN = Dirty(frozenset(), frozenset(), frozenset(), False)


class CoreState:
    """Live objects, indexes and the per-event scratch state of one routing core."""

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
        self._timers: dict[TimerKey, float] = {}  # key -> due time
        self._task_timers: dict[str, dict[TimerKey, None]] = {}  # task id -> its TASK_TIMERS
        self._rr: dict[str, str] = {}  # queue id -> expert offered last (round robin)
        self._seq = 0
        # ended tasks / closed offers stay exportable until the drain after the one that
        # reported them
        self._ended_now: dict[str, Task] = {}
        self._ended_prev: dict[str, Task] = {}
        self._closed_now: dict[str, Offer] = {}
        self._closed_prev: dict[str, Offer] = {}
        self._recent_closed: OrderedDict[str, str] = OrderedDict()  # offer id -> expert id
        # (task id, expert id) -> index in ``_out`` of this event's timeout withdrawal
        self._expired_now: dict[tuple[str, str], int] = {}
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

    def _reindex(self, e: ExpertLive) -> None:
        """Keep the expert in the free orderings exactly while they can take one more offer."""
        spec = self._specs.get(e.id)
        if (
            spec is not None
            and spec.enabled
            and e.presence == AVAILABLE
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
        if e.presence != AVAILABLE:
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

    # ------------------------------------------------------------------ indexes

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

    def _spare(self, t: Task, spec: QueueSpec) -> float:
        if spec.offer_to is None:
            return math.inf
        return spec.offer_to - len(t.open_offers)

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

    # ------------------------------------------------------------------ timers

    def _set_timer(self, key: TimerKey, at: float, quiet: bool = False) -> None:
        if self._timers.get(key) == at:
            return
        self._timers[key] = at
        if key.kind in TASK_TIMERS:
            self._task_timers.setdefault(key.subject, {})[key] = None
        if not quiet:
            self._out.append(SetTimer(key, at))

    def _drop_timer(self, key: TimerKey, cancel: bool = False) -> None:
        if self._timers.pop(key, None) is None:
            return
        if key.kind in TASK_TIMERS:
            keys = self._task_timers.get(key.subject)
            if keys is not None:
                keys.pop(key, None)
                if not keys:
                    del self._task_timers[key.subject]
        if cancel:
            self._out.append(CancelTimer(key))

    def _cancel_task_timers(self, t: Task, keep_cooldowns: bool = False) -> None:
        for key in sorted(self._task_timers.get(t.id, ())):
            if keep_cooldowns and key.kind is COOLDOWN_TIMER:
                continue
            self._drop_timer(key, cancel=True)

    def _arm_lifetime(self, t: Task, quiet: bool = False) -> None:
        """The bound of a task with its expert: ``max_task_lifetime`` after its creation."""
        spec = self._queues.get(t.queue_id) or self._retired_queues.get(t.queue_id)
        lifetime = spec.max_task_lifetime if spec is not None else MAX_TASK_LIFETIME
        at = max(self._now, t.created_at + lifetime)
        self._set_timer(TimerKey(LIFETIME_TIMER, t.id), at, quiet=quiet)

    def _arm_task_timers(self, t: Task, quiet: bool = False) -> None:
        """Max wait and the next escalation step (counted from entering the current queue)
        and the end of every running cooldown, for a waiting task."""
        spec = self._queues.get(t.queue_id)
        if spec is None:
            return
        at = max(self._now, t.enqueued_at + spec.max_wait)
        self._set_timer(TimerKey(MAX_WAIT_TIMER, t.id), at, quiet=quiet)
        if spec.escalate or len(self._task_timers.get(t.id, ())) > 1 + len(t.cooldowns):
            self._arm_escalation(t, spec, quiet=quiet)  # (or drop a step the queue lost)
        for eid, until in t.cooldowns.items():
            if until > self._now:
                self._set_timer(TimerKey(COOLDOWN_TIMER, t.id, eid), until, quiet=quiet)

    def _arm_escalation(self, t: Task, spec: QueueSpec, quiet: bool = False) -> None:
        nxt = t.step + 1
        key: TimerKey | None = None
        if nxt <= self._max_step(t.queue_id, spec):
            key = TimerKey(ESCALATE_TIMER, t.id, str(nxt))
        for old in list(self._task_timers.get(t.id, ())):
            if old != key and old.kind is ESCALATE_TIMER:
                self._drop_timer(old, cancel=not quiet)
        if key is not None:
            at = max(self._now, t.enqueued_at + _step_after(spec, nxt))
            self._set_timer(key, at, quiet=quiet)

    def _drop_expert(self, e: ExpertLive) -> None:
        if e.indexed is not None:
            self._free.remove(e)
            self._count_free(e.id, -1)
        self._experts.pop(e.id, None)
        self._drop_timer(TimerKey(WRAP_UP_TIMER, e.id), cancel=True)
        self._dirty_experts.add(e.id)


def _step_after(spec: QueueSpec, step: int) -> float:
    """Seconds in queue before escalation ``step`` applies (never earlier than the step before)."""
    return max((s.after for s in spec.escalate[:step]), default=0.0)
