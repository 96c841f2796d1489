"""Crash recovery: persist what ``drain_dirty`` names, restore midway, same outcome."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
from routing_sim import Sim, Store, StoredSim, config, expert

from expertline.routing.commands import AnswerRefused, SetTimer
from expertline.routing.events import (
    CallConnected,
    CallEnded,
    DeliveryFailed,
    Event,
    OfferAccepted,
    OfferDeclined,
    PresenceChanged,
    Recovered,
    TaskAbandoned,
    TaskCreated,
)
from expertline.routing.model import EscalationStep, OnMaxWait, QueueSpec, RoutingConfig
from expertline.routing.timers import TimerKey, TimerKind

Step = Callable[[Sim], None]


def cfg() -> RoutingConfig:
    experts = [expert(x, numbers={"s": i * 10}) for i, x in enumerate("abcdefg")]
    experts.append(expert("boss", may_decline=False))
    queues = [
        QueueSpec(
            "sales",
            "Sales",
            order="round_robin",
            offer_to=2,
            offer_timeout=15.0,
            decline_cooldown=40.0,
            wrap_up=20.0,
            max_wait=200.0,
            on_max_wait=OnMaxWait("overflow", "help"),
            escalate=(EscalationStep(after=50.0),),
        ),
        QueueSpec(
            "help",
            "Help",
            order="most_skilled",
            skill="s",
            offer_timeout=10.0,
            max_no_answer=2,
            max_wait=300.0,
            on_max_wait=OnMaxWait("label", "sip:cc@example.test"),
        ),
        QueueSpec("vip", "VIP", order="random", offer_to=None, priority=3, wrap_up=5.0),
    ]
    matches = {
        "sales": ({"a", "b", "c"}, {"a", "b", "c", "d", "e"}),
        "help": ({"d", "e", "f", "g"},),
        "vip": ({"a", "g", "boss"},),
    }
    return config(experts, queues, matches)


def answer(kind: str, expert_id: str) -> Step:
    def step(sim: Sim) -> None:
        offers = sim.core.open_offers(expert_id)
        if offers:
            oid = offers[0]["id"]
            sim.send(OfferAccepted(oid) if kind == "yes" else OfferDeclined(oid))

    return step


def send(event: Event) -> Step:
    return lambda sim: sim.send(event) and None


def wait(seconds: float) -> Step:
    return lambda sim: sim.advance(seconds) and None


def finish_all(sim: Sim) -> None:
    for tid in [f"t{i}" for i in range(12)]:
        t = sim.core.task(tid)
        if t is not None and t["active"]:
            if t["status"] in ("assigned", "connected"):
                sim.send(CallEnded(tid))
            else:
                sim.send(TaskAbandoned(tid))


SCENARIO: list[Step] = [
    send(PresenceChanged("a", "available")),
    wait(1),
    send(PresenceChanged("b", "available")),
    send(PresenceChanged("d", "available")),
    wait(1),
    send(PresenceChanged("f", "available")),
    send(TaskCreated("t0", "sales", caller="+1555000")),
    send(TaskCreated("t1", "sales", channel="chat")),
    send(TaskCreated("t2", "help", attributes={"s": 35})),
    wait(3),
    answer("no", "a"),
    answer("yes", "b"),
    wait(16),
    send(TaskCreated("t3", "vip")),
    send(PresenceChanged("g", "available")),
    send(PresenceChanged("boss", "available")),
    send(TaskCreated("t4", "sales")),
    wait(5),
    answer("yes", "d"),
    send(CallConnected("t3")),
    send(TaskCreated("t5", "help")),
    wait(30),
    answer("yes", "f"),
    send(DeliveryFailed("t0", 8)),
    send(PresenceChanged("c", "available")),
    send(PresenceChanged("e", "available")),
    wait(12),
    send(CallEnded("t1")),
    answer("yes", "c"),
    answer("no", "e"),
    send(TaskCreated("t6", "sales")),
    send(TaskCreated("t7", "help", attributes={"s": 60})),
    wait(45),
    answer("yes", "a"),
    send(CallEnded("t2")),
    send(TaskCreated("t8", "vip", channel="chat")),
    wait(60),
    answer("yes", "g"),
    answer("no", "d"),
    send(TaskAbandoned("t6")),
    send(TaskCreated("t9", "sales")),
    wait(150),
    answer("yes", "e"),
    answer("yes", "b"),
    wait(200),
    send(TaskCreated("t10", "help")),
    send(TaskCreated("t11", "sales")),
    wait(400),
    finish_all,
    wait(100),
]


@pytest.mark.parametrize("cut", range(1, len(SCENARIO), 2))
def test_restoring_midway_gives_the_same_outcome(cut: int) -> None:
    config_ = cfg()
    plain = StoredSim(config_, Store())
    for step in SCENARIO[:cut]:
        step(plain)
    mark = len(plain.log)
    store = copy.deepcopy(plain.store)
    now = plain.now
    for step in SCENARIO[cut:]:
        step(plain)

    restored_core = store.restore(config_, now)
    second = StoredSim(config_, store, core=restored_core, now=now)
    rec = second.send(Recovered())
    assert {c.key: c.at for c in rec if isinstance(c, SetTimer)} == {
        k: v for k, v in second.core.timers().items()
    }
    start = len(second.log)
    for step in SCENARIO[cut:]:
        step(second)
    assert second.log[start:] == plain.log[mark:]
    tcds = [r["task_id"] for r in plain.records("tcd")]
    assert sorted(tcds) == sorted(set(tcds)) == [f"t{i}" for i in sorted(range(12), key=str)]


def test_the_scenario_reaches_every_outcome() -> None:
    sim = StoredSim(cfg(), Store())
    for step in SCENARIO:
        step(sim)
    statuses = {r["status"] for r in sim.records("tcd")}
    assert {"completed", "abandoned"} <= statuses
    assert sim.records("attempt")
    assert sim.emitted("task.moved") or "overflowed" in statuses
    assert sim.core.live_counts()["tasks"] == 0
    assert sim.core.timers() == {
        k: v for k, v in sim.core.timers().items() if k.kind is TimerKind.WRAP_UP
    }


def test_dirty_names_everything_that_changed_and_exports_survive_one_drain() -> None:
    sim = Sim(cfg())
    sim.core.drain_dirty()
    sim.send(PresenceChanged("a", "available"))
    sim.send(TaskCreated("t0", "sales"))
    dirty = sim.core.drain_dirty()
    assert dirty.tasks == {"t0"} and dirty.experts == {"a"} and dirty.offers == {"t0.1"}
    assert dirty.meta  # round robin moved, task sequence moved
    sim.send(TaskAbandoned("t0"))
    dirty = sim.core.drain_dirty()
    assert sim.core.export_task("t0")["status"] == "abandoned"  # type: ignore[index]
    assert sim.core.export_offer("t0.1")["status"] == "withdrawn"  # type: ignore[index]
    assert not sim.core.drain_dirty()
    assert sim.core.export_task("t0") is None


def test_a_late_answer_after_a_restore_is_still_closed() -> None:
    store = Store()
    sim = StoredSim(cfg(), store)
    sim.send(PresenceChanged("a", "available"))
    sim.send(PresenceChanged("b", "available"))
    sim.send(TaskCreated("t0", "sales"))
    sim.send(OfferDeclined(sim.open_offer("a")))
    core = store.restore(cfg(), sim.now)
    core.handle(Recovered(), sim.now)
    assert core.handle(OfferAccepted("t0.1"), sim.now) == [AnswerRefused("t0.1", "a", "closed")]
    assert core.handle(OfferAccepted("t0.99"), sim.now) == [AnswerRefused("t0.99", None, "unknown")]


def test_a_restored_task_with_its_expert_keeps_its_lifetime_bound() -> None:
    store = Store()
    sim = StoredSim(cfg(), store)
    sim.send(PresenceChanged("a", "available"))
    created = sim.now
    sim.send(TaskCreated("t0", "sales"))
    sim.send(OfferAccepted(sim.open_offer("a")))
    sim.now += 60
    core = store.restore(cfg(), sim.now)
    out = core.handle(Recovered(), sim.now)
    lifetime = cfg().queues["sales"].max_task_lifetime
    assert SetTimer(TimerKey(TimerKind.LIFETIME, "t0"), created + lifetime) in out
