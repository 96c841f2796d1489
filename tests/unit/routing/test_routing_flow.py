"""Offers, timers and outcomes of the routing core (SPEC §4, §7) on a fake clock."""

from __future__ import annotations

from typing import get_type_hints

import pytest
from routing_sim import Sim, config, expert

from expertline.records.feed import ExpertStateRecord, TaskRecord
from expertline.routing.commands import (
    AnswerRefused,
    ConfirmAccepted,
    NotifyExpert,
    ReturnLabel,
    SendOffer,
    WithdrawOffer,
)
from expertline.routing.core import RoutingCore
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
from expertline.routing.model import EscalationStep, OnMaxWait, QueueSpec
from expertline.routing.timers import TimerKey, TimerKind


def two(q: QueueSpec | None = None, **kw: object) -> Sim:
    q = q or QueueSpec("q", "Q", **kw)  # type: ignore[arg-type]
    sim = Sim(config([expert("a"), expert("b")], [q]))
    sim.available("a", step=1)
    sim.available("b", step=1)
    return sim


def test_full_lifecycle_writes_one_rcd_one_tcd_and_the_task_record() -> None:
    sim = two(wrap_up=30.0)
    sim.send(
        TaskCreated(
            "t1", "q", caller="+15551230000", dialed_number="+18005550100", external_id="x-1"
        )
    )
    assert sim.status("t1") == "offered"
    sim.advance(3)
    out = sim.send(OfferAccepted(sim.open_offer("a")))
    assert [type(c) for c in out if isinstance(c, ConfirmAccepted | ReturnLabel)] == [
        ConfirmAccepted,
        ReturnLabel,
    ]
    assert sim.labels()[0] == ReturnLabel("t1", "sip:a@pbx.example.test", "a")
    sim.advance(2)
    sim.send(CallConnected("t1"))
    sim.advance(60)
    sim.send(CallEnded("t1"))
    (rcd,) = sim.records("rcd")
    (tcd,) = sim.records("tcd")
    assert rcd["label"] == "sip:a@pbx.example.test" and rcd["delay_time"] == 3.0
    assert tcd["call_disposition"] == 13
    assert tcd["peripheral_call_key"] == sim.emitted("task.created")[0]["code"]
    assert tcd["router_call_key"] == "x-1"
    assert tcd["ani"] == "+15551230000" and tcd["dialed_number"] == "+18005550100"
    assert (tcd["delay_time"], tcd["ring_time"], tcd["talk_time"], tcd["work_time"]) == (
        3.0,
        2.0,
        60.0,
        30.0,
    )
    assert tcd["duration"] == 65.0
    (rec,) = sim.emitted("task.record")
    assert set(rec) == set(get_type_hints(TaskRecord))
    assert rec["status"] == "completed" and rec["expert_id"] == "a"
    assert [o["outcome"] for o in rec["offers"]] == ["accepted"]
    assert rec["created_at"].endswith("Z")
    assert sim.core.task("t1")["active"] is False  # type: ignore[index]


def test_chat_handled_is_38() -> None:
    sim = two()
    sim.send(TaskCreated("t1", "q", channel="chat"))
    sim.send(OfferAccepted(sim.open_offer("a")))
    sim.send(CallEnded("t1"))
    assert sim.records("tcd")[0]["call_disposition"] == 38


def test_expert_state_changes_are_announced_in_order() -> None:
    sim = two(wrap_up=10.0)
    sim.send(TaskCreated("t1", "q"))
    sim.send(OfferAccepted(sim.open_offer("a")))
    sim.send(CallEnded("t1"))
    sim.advance(10)
    states = [
        (s["state"], s["previous"]) for s in sim.emitted("expert.state") if s["expert_id"] == "a"
    ]
    assert states == [
        ("available", "offline"),
        ("reserved", "available"),
        ("busy", "reserved"),
        ("wrap_up", "busy"),
        ("available", "wrap_up"),
    ]
    assert set(sim.emitted("expert.state")[0]) == set(get_type_hints(ExpertStateRecord))


def test_wrap_up_keeps_the_expert_out_until_it_ends() -> None:
    sim = two(wrap_up=30.0)
    sim.send(PresenceChanged("b", "away"))
    sim.send(TaskCreated("t1", "q"))
    sim.send(OfferAccepted(sim.open_offer("a")))
    sim.send(CallEnded("t1"))
    sim.send(TaskCreated("t2", "q"))
    assert sim.status("t2") == "queued"
    sim.advance(29)
    assert sim.status("t2") == "queued"
    sim.advance(1)
    assert sim.offered_to("t2") == ["a"]


def test_broadcast_first_yes_wins_and_the_others_are_withdrawn() -> None:
    sim = two(offer_to=2)
    sim.send(TaskCreated("t1", "q"))
    assert sim.offered_to("t1") == ["a", "b"]
    oa, ob = sim.open_offer("a"), sim.open_offer("b")
    sim.send(OfferAccepted(ob))
    assert [(w.expert_id, w.reason) for w in sim.withdrawals()] == [("a", "taken")]
    out = sim.send(OfferAccepted(oa))
    assert out == [AnswerRefused(oa, "a", "closed")]
    assert len(sim.labels()) == 1


def test_offer_to_all_offers_every_eligible_expert() -> None:
    sim = Sim(config([expert(x) for x in "abcde"], [QueueSpec("q", "Q", offer_to=None)]))
    sim.available(*"abcd")
    sim.send(TaskCreated("t1", "q"))
    assert sorted(sim.offered_to("t1")) == ["a", "b", "c", "d"]
    sim.available("e")  # comes in later: also offered the waiting task
    assert "e" in sim.offered_to("t1")


def test_timeout_moves_on_and_cooldown_keeps_the_expert_off() -> None:
    sim = two(offer_timeout=10.0, decline_cooldown=60.0)
    sim.send(TaskCreated("t1", "q"))
    assert sim.offered_to("t1") == ["a"]
    sim.advance(10)
    assert [(w.expert_id, w.reason) for w in sim.withdrawals()] == [("a", "timeout")]
    assert sim.offered_to("t1") == ["b"]
    sim.send(OfferDeclined(sim.open_offer("b")))
    assert sim.status("t1") == "queued"  # both in cooldown
    sim.advance(59)
    assert sim.status("t1") == "queued"
    sim.advance(1)  # a's cooldown ends (60 s after the timeout)
    assert sim.offered_to("t1") == ["a"]
    assert [e["expert_id"] for e in sim.emitted("offer.timeout")] == ["a"]
    assert [e["expert_id"] for e in sim.emitted("offer.declined")] == ["b"]


def test_without_cooldown_a_decline_goes_to_the_next_expert_first() -> None:
    sim = two()
    sim.send(TaskCreated("t1", "q"))
    sim.send(OfferDeclined(sim.open_offer("a")))
    assert sim.offered_to("t1") == ["b"]
    sim.send(OfferDeclined(sim.open_offer("b")))
    assert sim.offered_to("t1") == ["a"]  # everyone had it: the one who had it longest ago


def test_max_no_answer_sets_the_expert_away_and_tells_them() -> None:
    sim = two(offer_timeout=5.0, max_no_answer=2)
    sim.send(PresenceChanged("b", "dnd"))
    sim.send(TaskCreated("t1", "q"))
    sim.advance(5)  # a ignores once; re-offered (nobody else)
    assert sim.offered_to("t1") == ["a"]
    sim.send(TaskCreated("t2", "q"))
    sim.advance(5)
    assert NotifyExpert("a", "set_away", 2) in sim.log  # says how many, not "several"
    assert sim.core.expert_state("a")["presence"] == "away"  # type: ignore[index]
    assert sim.emitted("expert.presence")[-1]["source"] == "max_no_answer"
    assert sim.core.open_offers("a") == []
    sim.advance(1)
    sim.send(PresenceChanged("a", "available"))  # back: the count starts again
    assert sim.core.expert_state("a")["no_answer"] == 0  # type: ignore[index]
    assert sim.offered_to("t1") == ["a"]


def test_an_answer_resets_the_no_answer_count() -> None:
    sim = two(offer_timeout=5.0, max_no_answer=2)
    sim.send(PresenceChanged("b", "dnd"))
    sim.send(TaskCreated("t1", "q"))
    sim.advance(5)
    sim.send(OfferDeclined(sim.open_offer("a")))
    sim.advance(5)
    assert sim.core.expert_state("a")["presence"] == "available"  # type: ignore[index]


def test_escalation_widens_the_selection_after_the_step_time() -> None:
    q = QueueSpec("q", "Q", escalate=(EscalationStep(after=30.0),))
    sim = Sim(config([expert("a"), expert("b")], [q], matches={"q": ({"a"}, {"a", "b"})}))
    sim.available("a", "b")
    sim.send(PresenceChanged("a", "away"))
    sim.send(TaskCreated("t1", "q"))
    sim.advance(29)
    assert sim.status("t1") == "queued"
    sim.advance(1)
    assert sim.offered_to("t1") == ["b"]
    assert sim.emitted("task.escalated") == [{"task_id": "t1", "queue_id": "q", "step": 1}]


def test_max_wait_overflow_keeps_the_task_and_its_age() -> None:
    src = QueueSpec("src", "S", max_wait=60.0, on_max_wait=OnMaxWait("overflow", "dst"))
    dst = QueueSpec("dst", "D", max_wait=100.0)
    sim = Sim(
        config([expert("a"), expert("z")], [src, dst], matches={"src": ({"z"},), "dst": ({"a"},)})
    )
    sim.send(TaskCreated("old", "src"))
    code = sim.emitted("task.created")[0]["code"]
    sim.advance(30)
    sim.send(TaskCreated("young", "dst"))
    sim.advance(30)  # old overflows into dst, older than "young"
    assert sim.core.task("old")["queue_id"] == "dst"  # type: ignore[index]
    assert sim.emitted("task.moved") == [
        {"task_id": "old", "from_queue": "src", "queue_id": "dst", "reason": "max_wait"}
    ]
    sim.available("a")
    assert sim.offered_to("old") == ["a"]
    sim.send(OfferAccepted(sim.open_offer("a")))
    sim.send(CallEnded("old"))
    rec = sim.emitted("task.record")[0]
    assert rec["queues"] == ["src", "dst"] and rec["code"] == code
    assert sim.records("tcd")[0]["call_disposition"] == 13
    sim.advance(1000)  # "young" hits its own max wait (reject), "old" has no timers left
    assert [r["task_id"] for r in sim.records("tcd")] == ["old", "young"]


def test_max_wait_fallback_label_is_overflowed_15() -> None:
    q = QueueSpec(
        "q", "Q", max_wait=20.0, on_max_wait=OnMaxWait("label", "sip:agents@cc.example.test")
    )
    sim = Sim(config([expert("a")], [q]))
    sim.available("a")
    sim.send(TaskCreated("t1", "q"))
    sim.advance(20)
    assert sim.labels() == [ReturnLabel("t1", "sip:agents@cc.example.test", None)]
    assert [(w.expert_id, w.reason) for w in sim.withdrawals()][-1] == ("a", "overflow")
    assert sim.status("t1") == "overflowed"
    assert sim.records("tcd")[0]["call_disposition"] == 15
    assert sim.records("rcd")[0]["expert_id"] is None


def test_max_wait_reject_is_22() -> None:
    sim = Sim(config([expert("a")], [QueueSpec("q", "Q", max_wait=20.0)]))
    sim.send(TaskCreated("t1", "q"))
    sim.advance(20)
    assert sim.status("t1") == "rejected"
    assert sim.records("tcd")[0]["call_disposition"] == 22
    assert sim.emitted("task.rejected")[0]["task_id"] == "t1"


def test_priority_then_age_across_the_queues_an_expert_serves() -> None:
    q1 = QueueSpec("q1", "Q1", priority=0)
    q2 = QueueSpec("q2", "Q2", priority=5)
    sim = Sim(config([expert("a")], [q1, q2]))
    sim.send(TaskCreated("low-old", "q1"))
    sim.advance(1)
    sim.send(TaskCreated("high", "q2"))
    sim.advance(1)
    sim.send(TaskCreated("low-young", "q1"))
    sim.send(TaskCreated("vip", "q1", priority=9))
    order = []
    sim.available("a")
    for _ in range(4):
        oid = sim.open_offer("a")
        tid = sim.core.offer(oid)["task_id"]  # type: ignore[index]
        order.append(tid)
        sim.send(OfferAccepted(oid))
        sim.send(CallEnded(tid))
    assert order == ["vip", "high", "low-old", "low-young"]


def test_an_expert_who_may_not_decline_is_assigned_at_once() -> None:
    sim = Sim(config([expert("a", may_decline=False)], [QueueSpec("q", "Q")]))
    sim.available("a")
    out = sim.send(TaskCreated("t1", "q"))
    offer = next(c for c in out if isinstance(c, SendOffer))
    assert offer.notice_only and offer.expires_at is None
    assert ReturnLabel("t1", "sip:a@pbx.example.test", "a") in out
    assert sim.status("t1") == "assigned"


@pytest.mark.parametrize(
    ("channel", "stage", "code"),
    [
        ("voice", "queued", 2),
        ("chat", "queued", 36),
        ("voice", "offered", 2),
        ("chat", "offered", 37),
        ("voice", "assigned", 3),
        ("chat", "assigned", 37),
    ],
)
def test_abandon_dispositions(channel: str, stage: str, code: int) -> None:
    sim = Sim(config([expert("a")], [QueueSpec("q", "Q")]))
    if stage != "queued":
        sim.available("a")
    sim.send(TaskCreated("t1", "q", channel=channel))  # type: ignore[arg-type]
    if stage == "assigned":
        sim.send(OfferAccepted(sim.open_offer("a")))
    assert sim.status("t1") == stage
    sim.send(TaskAbandoned("t1"))
    assert [r["call_disposition"] for r in sim.records("tcd")] == [code]
    assert sim.status("t1") == "abandoned"
    if stage == "offered":
        assert sim.withdrawals()[-1].reason == "ended"
    assert sim.core.expert_state("a")["active"] == []  # type: ignore[index]


def test_presence_leaving_available_withdraws_and_reoffers() -> None:
    sim = two()
    sim.send(TaskCreated("t1", "q"))
    sim.send(PresenceChanged("a", "dnd"))
    assert sim.withdrawals()[-1] == WithdrawOffer(
        "t1.1", "t1", "a", sim.emitted("task.created")[0]["code"], "presence"
    )
    assert sim.offered_to("t1") == ["b"]


def test_delivery_failure_requeues_and_writes_an_attempt() -> None:
    sim = two(decline_cooldown=100.0)
    sim.send(TaskCreated("t1", "q"))
    sim.send(OfferAccepted(sim.open_offer("a")))
    sim.advance(20)
    sim.send(DeliveryFailed("t1", 19))
    (attempt,) = sim.records("attempt")
    assert attempt["call_disposition"] == 19 and attempt["expert_id"] == "a"
    assert attempt["ring_time"] == 20.0
    assert sim.offered_to("t1") == ["b"]  # a is in cooldown for this task
    assert sim.core.expert_state("a")["active"] == []  # type: ignore[index]
    sim.send(OfferAccepted(sim.open_offer("b")))
    sim.send(CallEnded("t1"))
    assert len(sim.records("tcd")) == 1
    rec = sim.emitted("task.record")[0]
    assert [a["disposition"] for a in rec["attempts"]] == [19]
    assert rec["expert_id"] == "b"


def test_delivery_failure_other_codes_and_states_are_ignored() -> None:
    sim = two()
    sim.send(TaskCreated("t1", "q"))
    assert sim.send(DeliveryFailed("t1", 19)) == []  # not assigned yet
    sim.send(OfferAccepted(sim.open_offer("a")))
    assert sim.send(DeliveryFailed("t1", 13)) == []


def test_task_failed_default_given_and_bad_dispositions() -> None:
    sim = two()
    sim.send(TaskCreated("t1", "q"))
    sim.send(TaskCreated("t2", "q"))
    assert sim.send(TaskFailed("t1", 0)) == []
    assert sim.send(TaskFailed("t1", "x")) == []  # type: ignore[arg-type]
    sim.send(TaskFailed("t1"))
    sim.send(TaskFailed("t2", 26))
    assert [r["call_disposition"] for r in sim.records("tcd")] == [12, 26]
    assert sim.status("t1") == "failed"


def test_recovered_ends_lost_tasks_with_27_and_rearms_timers() -> None:
    sim = two()
    sim.send(TaskCreated("t1", "q"))
    sim.send(TaskCreated("t2", "q"))
    sim.send(OfferAccepted(sim.open_offer("a")))
    out = sim.send(Recovered(lost_tasks=frozenset({"t1", "nope"})))
    assert [r["call_disposition"] for r in sim.records("tcd")] == [27]
    keys = {c.key for c in out if type(c).__name__ == "SetTimer"}
    assert keys == set(sim.core.timers())
    assert TimerKey(TimerKind.OFFER, sim.open_offer("b")) in keys


def test_recovered_after_a_failover_tells_each_expert_with_work_once() -> None:
    sim = Sim(config([expert("a"), expert("b"), expert("c")], [QueueSpec("q", "Q")]))
    sim.available("a", "b", "c", step=1)
    sim.send(TaskCreated("t1", "q"))
    sim.send(OfferAccepted(sim.open_offer("a")))  # a is on t1
    sim.send(TaskCreated("t2", "q"))  # offered to b
    assert sim.open_offer("b")
    quiet = sim.send(Recovered())  # a restart of the same node: nothing to say
    assert not [c for c in quiet if isinstance(c, NotifyExpert)]
    out = sim.send(Recovered(failover=True))
    told = [c for c in out if isinstance(c, NotifyExpert)]
    assert told == [NotifyExpert("a", "failover"), NotifyExpert("b", "failover")]  # not c


def test_a_task_whose_end_is_never_reported_frees_its_expert_with_tcd_41() -> None:
    """Lost signalling: no `connected` or `ended` ever comes. The task is bounded."""
    queue = QueueSpec("q", "Q", max_task_lifetime=3600.0, max_wait=7200.0)
    sim = Sim(config([expert("a")], [queue]))
    sim.available("a", step=1)
    created = sim.now
    sim.send(TaskCreated("t1", "q"))
    sim.send(OfferAccepted(sim.open_offer("a")))
    sim.send(TaskCreated("t2", "q"))  # waits: a is busy
    assert sim.timers[TimerKey(TimerKind.LIFETIME, "t1")] == created + 3600.0
    sim.advance(3599.0)
    assert sim.status("t1") == "assigned" and sim.records("tcd") == []
    sim.advance(1.0)
    (tcd,) = sim.records("tcd")
    assert (tcd["task_id"], tcd["call_disposition"]) == ("t1", 41)
    assert (
        sim.status("t1") == "failed" and TimerKey(TimerKind.LIFETIME, "t1") not in sim.core.timers()
    )
    assert sim.open_offer("a")  # free again: the waiting task reaches her


def test_a_connected_call_is_bounded_too_and_a_reported_end_cancels_the_bound() -> None:
    sim = Sim(config([expert("a")], [QueueSpec("q", "Q", max_task_lifetime=600.0)]))
    sim.available("a", step=1)
    for tid in ("long", "short"):
        sim.send(TaskCreated(tid, "q"))
        sim.send(OfferAccepted(sim.open_offer("a")))
        sim.send(CallConnected(tid))
        if tid == "short":
            sim.send(CallEnded(tid))
            assert TimerKey(TimerKind.LIFETIME, tid) not in sim.core.timers()
        else:
            sim.advance(600.0)
    assert [(r["task_id"], r["call_disposition"]) for r in sim.records("tcd")] == [
        ("long", 41),
        ("short", 13),
    ]
    sim.advance(3600.0)
    assert len(sim.records("tcd")) == 2  # nothing fires for an ended task


def test_a_requeued_task_loses_its_bound_until_it_is_assigned_again() -> None:
    sim = two(max_task_lifetime=600.0)
    sim.send(TaskCreated("t1", "q"))
    sim.send(OfferAccepted(sim.open_offer("a")))
    assert TimerKey(TimerKind.LIFETIME, "t1") in sim.core.timers()
    sim.send(DeliveryFailed("t1", 19))  # ring no answer: back to the queue
    assert TimerKey(TimerKind.LIFETIME, "t1") not in sim.core.timers()
    assert sim.status("t1") in ("queued", "offered")


def test_removing_a_queue_rejects_its_waiting_tasks_only() -> None:
    qa, qb = QueueSpec("qa", "A"), QueueSpec("qb", "B")
    cfg = config([expert("a"), expert("b")], [qa, qb], matches={"qa": ({"a"},), "qb": ({"b"},)})
    sim = Sim(cfg)
    sim.available("a")
    sim.send(TaskCreated("busy", "qa"))
    sim.send(OfferAccepted(sim.open_offer("a")))
    sim.send(TaskCreated("waiting", "qa"))
    sim.send(
        ConfigChanged(config([expert("a"), expert("b")], [qb], matches={"qb": ({"b"},)}, version=2))
    )
    assert sim.status("waiting") == "rejected"
    assert sim.records("tcd")[0]["call_disposition"] == 22
    assert sim.status("busy") == "assigned"
    sim.send(CallEnded("busy"))
    assert [r["task_id"] for r in sim.records("tcd")] == ["waiting", "busy"]


def test_a_delivery_failure_after_its_queue_was_removed_rejects() -> None:
    qa, qb = QueueSpec("qa", "A"), QueueSpec("qb", "B")
    sim = Sim(config([expert("a")], [qa, qb]))
    sim.available("a")
    sim.send(TaskCreated("t", "qa"))
    sim.send(OfferAccepted(sim.open_offer("a")))
    sim.send(ConfigChanged(config([expert("a")], [qb], version=2)))
    sim.send(DeliveryFailed("t", 19))
    assert [r["call_disposition"] for r in sim.records("attempt")] == [19]
    assert [r["call_disposition"] for r in sim.records("tcd")] == [22]
    assert sim.status("t") == "rejected"
    assert sim.core.timers() == {}


def test_removing_an_expert_withdraws_their_offers_but_not_their_tasks() -> None:
    sim = Sim(config([expert("a"), expert("b"), expert("c")], [QueueSpec("q", "Q", offer_to=2)]))
    sim.available("a", "b")
    sim.send(TaskCreated("t1", "q"))
    sim.send(OfferAccepted(sim.open_offer("a")))
    sim.send(TaskCreated("t2", "q"))
    assert sim.offered_to("t2") == ["b"]
    sim.send(
        ConfigChanged(
            config([expert("a"), expert("c")], [QueueSpec("q", "Q", offer_to=2)], version=2)
        )
    )
    assert sim.withdrawals()[-1].reason == "config" and sim.withdrawals()[-1].expert_id == "b"
    assert sim.status("t1") == "assigned"
    assert sim.core.export_expert("b") is None
    sim.send(CallEnded("t1"))
    assert sim.offered_to("t2") == ["a"]


def test_an_expert_who_no_longer_matches_loses_the_offer() -> None:
    cfg = config([expert("a"), expert("b")], [QueueSpec("q", "Q")])
    sim = Sim(cfg)
    sim.available("a", "b")
    sim.send(TaskCreated("t1", "q"))
    assert sim.offered_to("t1") == ["a"]
    sim.send(
        ConfigChanged(config([expert("a"), expert("b")], [QueueSpec("q", "Q")], {"q": ({"b"},)}, 2))
    )
    assert sim.offered_to("t1") == ["b"]


def test_capacity_counts_pending_offers() -> None:
    sim = Sim(config([expert("a", max_tasks=2)], [QueueSpec("q", "Q")]))
    sim.available("a")
    for i in range(3):
        sim.send(TaskCreated(f"t{i}", "q"))
    assert len(sim.core.open_offers("a")) == 2
    assert sim.status("t2") == "queued"
    sim.send(OfferAccepted(sim.core.open_offers("a")[0]["id"]))
    assert sim.status("t2") == "queued"  # one active + one pending = 2
    sim.send(CallEnded("t0"))
    assert sim.status("t2") == "offered"


def test_stale_timers_and_unknown_ids_change_nothing() -> None:
    sim = two()
    sim.send(TaskCreated("t1", "q"))
    oid = sim.open_offer("a")
    sim.send(OfferAccepted(oid))
    assert sim.send(TimerFired(TimerKey(TimerKind.OFFER, oid))) == []
    assert sim.send(TimerFired(TimerKey(TimerKind.MAX_WAIT, "t1"))) == []
    assert sim.send(TimerFired("nonsense")) == []  # type: ignore[arg-type]
    assert sim.send(OfferAccepted("zzz")) == [AnswerRefused("zzz", None, "unknown")]
    assert sim.send(OfferDeclined(oid)) == [AnswerRefused(oid, "a", "closed")]
    assert sim.send(CallConnected("nope")) == []
    assert sim.send(TaskAbandoned("nope")) == []
    assert sim.send(PresenceChanged("ghost", "available")) == []
    assert sim.send(PresenceChanged("a", "sleepy")) == []  # type: ignore[arg-type]
    assert sim.send(TaskCreated("t9", "no-such-queue")) == []
    assert sim.send(TaskCreated("t1", "q")) == []  # duplicate id
    assert sim.send(TaskCreated("t8", "q", channel="fax")) == []  # type: ignore[arg-type]
    sim.send(CallConnected("t1"))
    assert sim.send(TaskAbandoned("t1")) == []  # connected calls end, they are not abandoned


def test_malformed_events_change_nothing() -> None:
    sim = two()
    sim.send(TaskCreated("t1", "q"))
    before = sim.core.export_task("t1")
    bad = [
        TaskCreated(["x"], "q"),  # type: ignore[arg-type]
        TaskCreated("t2", "q", attributes=["a"]),  # type: ignore[arg-type]
        TaskCreated("t3", "q", caller=5),  # type: ignore[arg-type]
        PresenceChanged({"a"}, "available"),  # type: ignore[arg-type]
        OfferAccepted(None),  # type: ignore[arg-type]
        OfferAccepted("t1.1", phone=123),  # type: ignore[arg-type]
        TaskAbandoned(7),  # type: ignore[arg-type]
        DeliveryFailed("t1", "19"),  # type: ignore[arg-type]
        TimerFired(None),  # type: ignore[arg-type]
        TimerFired("maxwait:t1"),  # type: ignore[arg-type]
        TimerFired(("maxwait", "t1", "")),  # type: ignore[arg-type]
        Recovered(frozenset({1})),  # type: ignore[arg-type]
        ConfigChanged("v2"),  # type: ignore[arg-type]
        "not an event",  # type: ignore[arg-type]
    ]
    for event in bad:
        assert sim.send(event) == [], event  # type: ignore[arg-type]
    assert sim.core.export_task("t1") == before
    assert sim.core.export_task("t2") is None and sim.core.export_task("t3") is None


def test_a_timer_fired_before_its_time_is_ignored() -> None:
    sim = two(offer_timeout=10.0)
    sim.send(TaskCreated("t1", "q"))
    oid = sim.open_offer("a")
    sim.now += 5
    assert sim.send(TimerFired(TimerKey(TimerKind.OFFER, oid))) == []
    assert sim.open_offer("a") == oid


def test_events_before_the_first_configuration_are_ignored() -> None:
    core = RoutingCore()
    assert core.handle(TaskCreated("t", "q"), 1.0) == []


def test_codes_are_four_digits_unique_and_deterministic() -> None:
    def codes() -> list[str]:
        sim = Sim(config([expert("a")], [QueueSpec("q", "Q")]))
        for i in range(300):
            sim.send(TaskCreated(f"t{i}", "q"))
        return [e["code"] for e in sim.emitted("task.created")]

    first = codes()
    assert first == codes()
    assert len(set(first)) == 300
    assert all(len(c) == 4 and c.isdigit() for c in first)


def test_offer_ids_are_task_id_and_counter() -> None:
    sim = two()
    sim.send(TaskCreated("t1", "q"))
    sim.send(OfferDeclined("t1.1"))
    assert sim.open_offer("b") == "t1.2"


def test_decisions_are_logged_as_key_values(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="expertline.routing")
    src = QueueSpec("src", "S", max_wait=10.0, on_max_wait=OnMaxWait("overflow", "dst"))
    dst = QueueSpec("dst", "D", max_wait=10.0)
    sim = Sim(config([expert("a")], [src, dst], matches={"src": ((),), "dst": ((),)}))
    sim.send(TaskCreated("t1", "src", caller="+15551234567"))
    sim.advance(20)
    lines = [r.getMessage() for r in caplog.records]
    assert "task=t1 overflowed from=src to=dst reason=max_wait" in lines
    assert "task=t1 rejected reason=max_wait queue=dst" in lines
    assert not any("+15551234567" in line for line in lines)


def test_an_expert_back_at_the_same_instant_gets_the_task_they_declined_again() -> None:
    # decline_cooldown 0: the only expert declines, leaves and comes back within one clock
    # reading (one batch of events); the task must not hang with that expert free.
    sim = Sim(config([expert("b")], [QueueSpec("q", "Q")]))
    sim.available("b")
    sim.send(TaskCreated("t1", "q"))
    sim.send(OfferDeclined(sim.open_offer("b")))
    sim.send(PresenceChanged("b", "away"))
    assert sim.status("t1") == "queued"
    sim.send(PresenceChanged("b", "available"))
    assert sim.status("t1") == "offered"
    assert sim.offered_to("t1")[-1] == "b"
