"""Answers and events that cross each other: exactly one wins, the rest change nothing."""

from __future__ import annotations

from routing_sim import Sim, config, expert

from expertline.routing.commands import AnswerRefused, ReturnLabel
from expertline.routing.events import (
    CallEnded,
    ConfigChanged,
    OfferAccepted,
    OfferDeclined,
    PresenceChanged,
    TaskAbandoned,
    TaskCreated,
)
from expertline.routing.model import QueueSpec
from expertline.routing.timers import TimerKey, TimerKind


def broadcast() -> Sim:
    sim = Sim(config([expert("a"), expert("b"), expert("c")], [QueueSpec("q", "Q", offer_to=3)]))
    sim.available("a", "b", "c")
    sim.send(TaskCreated("t", "q"))
    return sim


def test_two_accepts_at_the_same_moment_one_wins() -> None:
    sim = broadcast()
    oa, ob, oc = (sim.open_offer(x) for x in "abc")
    first = sim.send(OfferAccepted(ob))
    second = sim.send(OfferAccepted(oa))
    third = sim.send(OfferDeclined(oc))
    assert ReturnLabel("t", "sip:b@pbx.example.test", "b") in first
    assert second == [AnswerRefused(oa, "a", "closed")]
    assert third == [AnswerRefused(oc, "c", "closed")]
    assert [label.expert_id for label in sim.labels()] == ["b"]
    assert sim.core.expert_state("a")["state"] == "available"  # type: ignore[index]


def test_accept_after_presence_left_is_refused_and_the_task_moves_on() -> None:
    sim = Sim(config([expert("a"), expert("b")], [QueueSpec("q", "Q")]))
    sim.available("a", "b")
    sim.send(TaskCreated("t", "q"))
    oa = sim.open_offer("a")
    sim.send(PresenceChanged("a", "offline"))
    assert sim.send(OfferAccepted(oa)) == [AnswerRefused(oa, "a", "closed")]
    assert sim.offered_to("t") == ["b"]


def test_accept_after_the_caller_hung_up_is_refused() -> None:
    sim = broadcast()
    oa = sim.open_offer("a")
    sim.send(TaskAbandoned("t"))
    assert sim.send(OfferAccepted(oa)) == [AnswerRefused(oa, "a", "closed")]
    assert sim.labels() == []
    assert [r["call_disposition"] for r in sim.records("tcd")] == [2]


def test_hang_up_right_after_the_accept_is_an_abandoned_ring() -> None:
    sim = broadcast()
    sim.send(OfferAccepted(sim.open_offer("a")))
    sim.send(TaskAbandoned("t"))
    assert [r["call_disposition"] for r in sim.records("tcd")] == [3]
    assert sim.core.expert_state("a")["state"] == "available"  # type: ignore[index]
    assert sim.send(CallEnded("t")) == []  # the late hang-up report changes nothing


def test_accept_after_the_expert_was_removed_is_refused() -> None:
    sim = broadcast()
    oa = sim.open_offer("a")
    sim.send(
        ConfigChanged(
            config([expert("b"), expert("c")], [QueueSpec("q", "Q", offer_to=3)], version=2)
        )
    )
    assert sim.send(OfferAccepted(oa)) == [AnswerRefused(oa, "a", "closed")]


def test_a_decline_and_an_accept_of_the_same_offer() -> None:
    sim = broadcast()
    oa = sim.open_offer("a")
    sim.send(OfferDeclined(oa))
    assert sim.send(OfferAccepted(oa)) == [AnswerRefused(oa, "a", "closed")]
    assert sim.status("t") == "offered"


def test_duplicate_accept_is_refused_once_assigned() -> None:
    sim = broadcast()
    oa = sim.open_offer("a")
    sim.send(OfferAccepted(oa))
    assert sim.send(OfferAccepted(oa)) == [AnswerRefused(oa, "a", "closed")]
    assert len(sim.labels()) == 1


def test_tasks_waiting_through_a_config_change_keep_their_place() -> None:
    sim = Sim(config([expert("a")], [QueueSpec("q", "Q", max_wait=100.0)]))
    sim.send(TaskCreated("old", "q"))
    sim.advance(10)
    sim.send(TaskCreated("new", "q"))
    sim.send(
        ConfigChanged(
            config([expert("a"), expert("b")], [QueueSpec("q", "Q", max_wait=50.0)], version=2)
        )
    )
    assert (
        sim.core.timers()[TimerKey(TimerKind.MAX_WAIT, "old")]
        == sim.core.task("old")["created_at"] + 50.0
    )  # type: ignore[index]
    sim.available("b")
    assert sim.offered_to("old") == ["b"]
    assert sim.status("new") == "queued"
