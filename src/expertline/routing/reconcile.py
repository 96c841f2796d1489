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
        self._install_config(config)
        self._restore_experts(config, experts)
        self._restore_tasks(tasks)
        self._restore_offers(offers)
        self._relink_restored()
        if meta:
            self._seq = max(self._seq, int(meta.get("seq", 0)))
            self._rr = {str(k): str(v) for k, v in (meta.get("rr") or {}).items()}
        self._rearm_restored()
        self._forget_changes()

    def _restore_experts(self, config: RoutingConfig, experts: Iterable[dict[str, Any]]) -> None:
        """Stored experts without their links (rebuilt from the tasks), plus every configured one."""
        for d in experts:
            e = ExpertLive.from_dict(d)
            e.active = {}
            e.pending = {}
            self._experts[e.id] = e
        for eid in config.experts:
            self._experts.setdefault(eid, ExpertLive(eid))

    def _restore_tasks(self, tasks: Iterable[dict[str, Any]]) -> None:
        """Stored tasks still waiting or with an expert; ended ones stay ended."""
        for d in tasks:
            t = Task.from_dict(d)
            if t.status not in WAITING and t.status not in (
                TaskStatus.ASSIGNED,
                TaskStatus.CONNECTED,
            ):
                continue
            self._tasks[t.id] = t
            self._take_code(t.code, t.id)
            self._seq = max(self._seq, t.seq + 1)

    def _restore_offers(self, offers: Iterable[dict[str, Any]]) -> None:
        """Stored open offers whose waiting task still names them as its offer to that expert."""
        for d in offers:
            if d.get("status", "open") != "open":
                continue
            o = Offer.from_dict(d)
            owner = self._tasks.get(o.task_id)
            if (
                owner is None
                or owner.status not in WAITING
                or owner.open_offers.get(o.expert_id) != o.id
            ):
                continue
            self._offers[o.id] = o

    def _relink_restored(self) -> None:
        """Drop links to offers not restored, move each task's status through the task
        lifecycle to match its open offers, and rebuild the experts' pending and active sets."""
        for t in sorted(self._tasks.values(), key=lambda t: t.seq):
            t.open_offers = {eid: oid for eid, oid in t.open_offers.items() if oid in self._offers}
            if t.status is TaskStatus.OFFERED and not t.open_offers:
                t.status = TASK.fire(t.status, TaskTrigger.OFFERS_CLOSED)
            elif t.status is TaskStatus.QUEUED and t.open_offers:
                t.status = TASK.fire(t.status, TaskTrigger.OFFER)
            for eid, oid in t.open_offers.items():
                self._experts.setdefault(eid, ExpertLive(eid)).pending[oid] = t.id
            if t.expert_id is not None and t.status not in WAITING:
                self._experts.setdefault(t.expert_id, ExpertLive(t.expert_id)).active[t.id] = None

    def _rearm_restored(self) -> None:
        """Timers of the restored offers, tasks and wrap-ups, quietly; experts reindexed."""
        for o in self._offers.values():
            if o.expires_at is not None:
                self._set_timer(TimerKey(OFFER_TIMER, o.id), o.expires_at, quiet=True)
        for t in self._tasks.values():
            if t.status in WAITING:
                self._arm_task_timers(t, quiet=True)
                self._rehung(t)
            elif t.status in WITH_EXPERT:
                self._arm_lifetime(t, quiet=True)
        for e in self._experts.values():
            if e.wrapup_until is not None:
                self._set_timer(TimerKey(WRAP_UP_TIMER, e.id), e.wrapup_until, quiet=True)
            self._reindex(e)

    def _forget_changes(self) -> None:
        """A restored state is the stored one: nothing dirty to write, no work, no output."""
        self._dirty_tasks.clear()
        self._dirty_offers.clear()
        self._dirty_experts.clear()
        self._dirty_meta = False
        self._touched.clear()
        self._work_tasks.clear()
        self._work_experts.clear()
        self._out = []
