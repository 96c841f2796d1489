"""Configuration: installing a version, bringing live state in line with it, and rebuilding
a core's state from exported rows after a restart or failover."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from expertline.routing import records
from expertline.routing.live import ExpertLive, Offer, Task
from expertline.routing.matching import Matching
from expertline.routing.model import RoutingConfig
from expertline.routing.state import _Slot
from expertline.routing.states import TASK, WAITING, WITH_EXPERT, TaskStatus, TaskTrigger
from expertline.routing.strategies import FreeIndex
from expertline.routing.timers import OFFER_TIMER, WRAP_UP_TIMER, TimerKey

log = logging.getLogger("expertline.routing")


class Reconcile(Matching):
    """A new configuration, or a restored state, made consistent."""

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

    def _restore_state(
        self,
        config: RoutingConfig,
        tasks: Iterable[dict[str, Any]],
        offers: Iterable[dict[str, Any]],
        experts: Iterable[dict[str, Any]],
        meta: dict[str, Any] | None,
    ) -> None:
        """Fill a fresh core from exported dicts (``RoutingCore.restore``)."""
        core = self
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
                t.status = TASK.fire(t.status, TaskTrigger.OFFERS_CLOSED)
            elif t.status is TaskStatus.QUEUED and t.open_offers:
                t.status = TASK.fire(t.status, TaskTrigger.OFFER)
            for eid, oid in t.open_offers.items():
                core._experts.setdefault(eid, ExpertLive(eid)).pending[oid] = t.id
            if t.expert_id is not None and t.status not in WAITING:
                core._experts.setdefault(t.expert_id, ExpertLive(t.expert_id)).active[t.id] = None
        if meta:
            core._seq = max(core._seq, int(meta.get("seq", 0)))
            core._rr = {str(k): str(v) for k, v in (meta.get("rr") or {}).items()}
        for o in core._offers.values():
            if o.expires_at is not None:
                core._set_timer(TimerKey(OFFER_TIMER, o.id), o.expires_at, quiet=True)
        for t in core._tasks.values():
            if t.status in WAITING:
                core._arm_task_timers(t, quiet=True)
                core._rehung(t)
            elif t.status in WITH_EXPERT:
                core._arm_lifetime(t, quiet=True)
        for e in core._experts.values():
            if e.wrapup_until is not None:
                core._set_timer(TimerKey(WRAP_UP_TIMER, e.id), e.wrapup_until, quiet=True)
            core._reindex(e)
        core._dirty_tasks.clear()
        core._dirty_offers.clear()
        core._dirty_experts.clear()
        core._dirty_meta = False
        core._touched.clear()
        core._work_tasks.clear()
        core._work_experts.clear()
        core._out = []
