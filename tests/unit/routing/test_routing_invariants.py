"""Random interleavings of everything that can happen, checked against the core's invariants.

- a task is with at most one expert, and assigned once per time it entered a queue;
- no expert is over capacity (active tasks + pending offers <= max_tasks);
- every ended task has exactly one TCD, and no live task has one;
- every open offer belongs to a waiting task (offers end with their task), and every offer
  ends exactly once;
- timers exist only for live objects, and the timer commands agree with the core;
- after every event the core is settled: no task wanting offers has a free expert it could
  be offered to;
- a restore from the persisted exports, at any point, continues consistently.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from routing_sim import Sim, Store, StoredSim, config, expert

from expertline.routing.commands import Emit, ReturnLabel, WriteRecord
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
)
from expertline.routing.model import EscalationStep, OnMaxWait, QueueSpec, RoutingConfig
from expertline.routing.timers import TimerKey, TimerKind

EXPERTS = ["a", "b", "c", "d", "e"]
QUEUES = ["q1", "q2", "q3"]


def make_config(variant: int) -> RoutingConfig:
    experts = [
        expert("a", max_tasks=2, numbers={"s": 10}),
        expert("b", numbers={"s": 50}),
        expert("c", may_decline=False, numbers={"s": 30}),
        expert("d", numbers={"s": 80}),
    ]
    if variant == 0:
        experts.append(expert("e", max_tasks=2, numbers={"s": 5}))
    queues = [
        QueueSpec(
            "q1",
            "One",
            order="longest_idle",
            offer_to=2,
            offer_timeout=10.0,
            decline_cooldown=15.0,
            wrap_up=5.0,
            max_wait=60.0,
            on_max_wait=OnMaxWait("overflow", "q2"),
            escalate=(EscalationStep(after=20.0),),
            max_no_answer=2,
        ),
        QueueSpec(
            "q2",
            "Two",
            order="most_skilled",
            skill="s",
            offer_to=1,
            offer_timeout=8.0,
            max_wait=90.0,
            on_max_wait=OnMaxWait("label", "sip:fallback@example.test"),
            priority=1 if variant == 0 else 0,
        ),
    ]
    matches: dict[str, tuple[set[str], ...]] = {
        "q1": ({"a", "b"}, {"a", "b", "d", "e"}),
        "q2": ({"b", "c", "d"} if variant == 0 else {"b", "d"},),
    }
    if variant == 0:
        queues.append(
            QueueSpec("q3", "Three", order="round_robin", offer_to=None, max_wait=40.0, wrap_up=3.0)
        )
        matches["q3"] = ({"a", "c", "e"},)
    return config(experts, queues, matches, version=variant + 1)


class RoutingMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.variant = 0
        self.store = Store()
        self.sim: Sim = StoredSim(make_config(0), self.store)
        self.task_ids: list[str] = []
        self.offer_ids: list[str] = []

    # --- helpers ---------------------------------------------------------------------------

    def live_tasks(self) -> list[dict[str, Any]]:
        out = []
        for tid in self.task_ids:
            t = self.sim.core.task(tid)
            if t is not None and t["active"]:
                out.append(t)
        return out

    def track(self) -> None:
        for c in self.sim.log:
            if type(c).__name__ == "SendOffer" and c.offer_id not in self.offer_ids:  # type: ignore[union-attr]
                self.offer_ids.append(c.offer_id)  # type: ignore[union-attr]

    # --- rules -----------------------------------------------------------------------------

    @rule(
        queue=st.sampled_from([*QUEUES, "nope"]),
        channel=st.sampled_from(["voice", "chat"]),
        priority=st.none() | st.integers(0, 3),
        skill=st.integers(0, 100),
    )
    def create(self, queue: str, channel: str, priority: int | None, skill: int) -> None:
        tid = f"t{len(self.task_ids)}"
        self.task_ids.append(tid)
        self.sim.send(TaskCreated(tid, queue, channel, priority, attributes={"s": skill}))  # type: ignore[arg-type]
        self.track()

    @rule(
        eid=st.sampled_from([*EXPERTS, "ghost"]),
        status=st.sampled_from(["available", "available", "away", "dnd", "offline"]),
    )
    def presence(self, eid: str, status: str) -> None:
        self.sim.send(PresenceChanged(eid, status))  # type: ignore[arg-type]
        self.track()

    @rule(data=st.data(), yes=st.booleans())
    def answer(self, data: st.DataObject, yes: bool) -> None:
        if not self.offer_ids:
            return
        oid = data.draw(st.sampled_from(self.offer_ids))  # open or long closed: races
        self.sim.send(OfferAccepted(oid) if yes else OfferDeclined(oid))
        self.track()

    @rule(
        data=st.data(), what=st.sampled_from(["connect", "end", "abandon", "fail", "rna", "busy"])
    )
    def task_event(self, data: st.DataObject, what: str) -> None:
        if not self.task_ids:
            return
        tid = data.draw(st.sampled_from(self.task_ids))
        event = {
            "connect": CallConnected(tid),
            "end": CallEnded(tid),
            "abandon": TaskAbandoned(tid),
            "fail": TaskFailed(tid),
            "rna": DeliveryFailed(tid, 19),
            "busy": DeliveryFailed(tid, 8),
        }[what]
        self.sim.send(event)  # type: ignore[arg-type]
        self.track()

    @rule(seconds=st.sampled_from([0.5, 1.0, 3.0, 8.0, 10.0, 25.0, 70.0]))
    def wait(self, seconds: float) -> None:
        self.sim.advance(seconds)
        self.track()

    @rule()
    def change_config(self) -> None:
        self.variant = 1 - self.variant
        self.sim.send(ConfigChanged(make_config(self.variant)))
        self.track()

    @rule(data=st.data())
    def crash_and_recover(self, data: st.DataObject) -> None:
        live = [t["id"] for t in self.live_tasks()]
        lost = data.draw(st.frozensets(st.sampled_from(live), max_size=2)) if live else frozenset()
        core = self.store.restore(make_config(self.variant), self.sim.now)
        log = self.sim.log
        self.sim = StoredSim(make_config(self.variant), self.store, core=core, now=self.sim.now)
        self.sim.log = log
        self.sim.send(Recovered(lost_tasks=lost))
        self.track()

    # --- invariants ------------------------------------------------------------------------

    @invariant()
    def capacity(self) -> None:
        cfg = self.sim.core.config
        assert cfg is not None
        holders: Counter[str] = Counter()
        for eid in EXPERTS:
            st_ = self.sim.core.expert_state(eid)
            if st_ is None:
                continue
            for tid in st_["active"]:
                holders[tid] += 1
            spec = cfg.experts.get(eid)
            if spec is not None:
                assert len(st_["active"]) + len(st_["pending"]) <= spec.max_tasks, st_
            else:
                assert not st_["pending"]
        assert all(n == 1 for n in holders.values()), holders

    @invariant()
    def assigned_once_per_queue_entry(self) -> None:
        assigned: Counter[str] = Counter()
        requeued: Counter[str] = Counter()
        labels: Counter[str] = Counter()
        for c in self.sim.log:
            if isinstance(c, Emit) and c.type == "task.assigned":
                assigned[c.data["task_id"]] += 1
            elif isinstance(c, Emit) and c.type == "task.requeued":
                requeued[c.data["task_id"]] += 1
            elif isinstance(c, ReturnLabel):
                labels[c.task_id] += 1
        for tid, n in assigned.items():
            assert n <= 1 + requeued[tid], (tid, n)
        for tid, n in labels.items():
            assert n <= 1 + requeued[tid], (tid, n)

    @invariant()
    def one_tcd_per_ended_task(self) -> None:
        tcds = Counter(
            c.data["task_id"]
            for c in self.sim.log
            if isinstance(c, WriteRecord) and c.kind == "tcd"
        )
        records = Counter(
            c.data["task_id"]
            for c in self.sim.log
            if isinstance(c, Emit) and c.type == "task.record"
        )
        assert all(n == 1 for n in tcds.values()), tcds
        assert tcds == records
        for t in self.live_tasks():
            assert t["id"] not in tcds
        for tid in tcds:
            t = self.sim.core.task(tid)
            assert t is None or not t["active"]

    @invariant()
    def offers_belong_to_waiting_tasks(self) -> None:
        waiting = {t["id"]: t for t in self.live_tasks() if t["status"] in ("queued", "offered")}
        seen = set()
        for eid in EXPERTS:
            for o in self.sim.core.open_offers(eid):
                assert o["task_id"] in waiting, o
                assert waiting[o["task_id"]]["open_offers"].get(eid) == o["id"]
                seen.add(o["id"])
        for t in waiting.values():
            assert set(t["open_offers"].values()) <= seen
            assert (t["status"] == "offered") == bool(t["open_offers"])

    @invariant()
    def every_offer_ends_once(self) -> None:
        ends: Counter[str] = Counter()
        for c in self.sim.log:
            if isinstance(c, Emit) and c.type in (
                "offer.accepted",
                "offer.declined",
                "offer.timeout",
                "offer.withdrawn",
            ):
                ends[c.data["offer_id"]] += 1
        assert all(n == 1 for n in ends.values()), ends
        open_ids = {o["id"] for eid in EXPERTS for o in self.sim.core.open_offers(eid)}
        for oid in self.offer_ids:
            assert (oid in open_ids) != (ends[oid] == 1), oid

    @invariant()
    def timers_only_for_live_objects(self) -> None:
        core = self.sim.core
        timers = core.timers()
        assert timers == self.sim.timers
        live = {t["id"]: t for t in self.live_tasks()}
        for key in timers:
            kind, rest = key.kind, key.subject
            if kind is TimerKind.OFFER:
                o = core.offer(rest)
                assert o is not None and o["status"] == "open", key
            elif kind in (TimerKind.MAX_WAIT, TimerKind.ESCALATE):
                assert rest in live and live[rest]["status"] in ("queued", "offered"), key
            elif kind is TimerKind.COOLDOWN:
                assert rest in live, key
            elif kind is TimerKind.WRAP_UP:
                st_ = core.expert_state(rest)
                assert st_ is not None and st_["wrapup_until"] is not None, key
            elif kind is TimerKind.LIFETIME:
                assert rest in live and live[rest]["status"] in ("assigned", "connected"), key
            else:
                raise AssertionError(key)
        for t in live.values():
            if t["status"] in ("queued", "offered"):
                assert TimerKey(TimerKind.MAX_WAIT, t["id"]) in timers
            else:  # with its expert: bounded, whatever the routing client reports or not
                assert TimerKey(TimerKind.LIFETIME, t["id"]) in timers

    @invariant()
    def settled(self) -> None:
        core = self.sim.core
        cfg = core.config
        assert cfg is not None
        now = self.sim.now
        for t in self.live_tasks():
            if t["status"] not in ("queued", "offered"):
                continue
            spec = cfg.queues[t["queue_id"]]
            if spec.offer_to is not None and len(t["open_offers"]) >= spec.offer_to:
                continue
            steps = cfg.matches[t["queue_id"]]
            match = steps[min(t["step"], len(steps) - 1)]
            for eid in sorted(match):
                st_ = core.expert_state(eid)
                if st_ is None or not st_["free"] or eid in t["open_offers"]:
                    continue
                until = t["cooldowns"].get(eid)
                assert until is not None and now < until, (t["id"], eid, t)


TestRoutingMachine = RoutingMachine.TestCase
TestRoutingMachine.settings = settings(
    max_examples=int(__import__("os").environ.get("ROUTING_EXAMPLES", "60")),
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestRoutingMachine.pytestmark = [pytest.mark.slow]
