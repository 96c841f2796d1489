"""Matching: after every event the tasks and experts it touched are settled, best task first,
so that no hungry task is left with a free expert it could be offered to."""

from __future__ import annotations

import math
from typing import Any

from expertline.routing.live import Task
from expertline.routing.outcomes import Outcomes
from expertline.routing.states import WAITING
from expertline.routing.strategies import UNTRIED, choose


class Matching(Outcomes):
    """Settling touched tasks and experts against each other."""

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
