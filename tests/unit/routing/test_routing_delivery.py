"""Failed deliveries (SIP proxy: the expert's phone fails, is busy or rings out) on a fake clock.

A phone that fails at once must not make a storm of calls and offers: the expert is kept off
that task for ``delivery_cooldown`` (other experts first), and ``max_delivery_failures``
failures in a row set the expert away with the ``phone_failed`` notice.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

from routing_sim import Sim, config, expert

from expertline.config.schema import Queue
from expertline.eligibility.build import queue_spec
from expertline.routing.commands import NotifyExpert, ReturnLabel, SendOffer, WithdrawOffer
from expertline.routing.events import (
    CallConnected,
    DeliveryFailed,
    OfferAccepted,
    OfferDeclined,
    PresenceChanged,
    TaskCreated,
)
from expertline.routing.model import QueueSpec


def sim_of(*experts: str, may_decline: bool = True, **queue: Any) -> Sim:
    sim = Sim(
        config(
            [expert(e, may_decline=may_decline) for e in experts], [QueueSpec("q", "Q", **queue)]
        )
    )
    sim.available(*experts, step=1)
    return sim


def fail_at_once(sim: Sim, seconds: float, tick: float = 0.1) -> None:
    """For ``seconds``, every phone the task reaches fails at once: accept whatever offer is
    open, then report the failure (19), like a SIP proxy whose INVITE gets 404 at once."""
    end = sim.now + seconds
    steps = 0
    while sim.now < end and steps < 2000:  # bounded: a storm ends the loop, not the test run
        steps += 1
        for eid in ("a", "b", "c"):
            for offer in sim.core.open_offers(eid):
                sim.send(OfferAccepted(offer["id"]))
        task = sim.core.task("t1")
        if task is not None and task["status"] == "assigned":
            sim.send(DeliveryFailed("t1", 19))
            continue  # the requeue may reach someone at once: look again at this instant
        sim.advance(tick)


def test_a_phone_that_fails_at_once_is_called_once_per_cooldown() -> None:
    sim = sim_of("a", max_wait=600.0, max_delivery_failures=0)
    sim.send(TaskCreated("t1", "q"))
    fail_at_once(sim, 57.0)
    calls = [c for c in sim.log if isinstance(c, ReturnLabel)]
    offers = [c for c in sim.log if isinstance(c, SendOffer)]
    # 0, 5, 10, ... 55 s: never more than one call (and one offer) per 5 s cooldown
    assert len(calls) == len(offers) == 12
    at = [r["at"] for r in sim.records("attempt")]
    assert all(later - earlier >= 5.0 for earlier, later in pairwise(at))


def test_a_different_expert_is_tried_first_and_the_failed_one_waits_out_the_cooldown() -> None:
    sim = sim_of("a", "b")
    sim.send(TaskCreated("t1", "q"))
    sim.send(OfferAccepted(sim.open_offer("a")))
    sim.send(DeliveryFailed("t1", 19))
    assert sim.offered_to("t1") == ["b"]
    sim.send(OfferDeclined(sim.open_offer("b")))
    assert sim.offered_to("t1") == ["b"]  # who just declined, rather than the failed phone
    sim.advance(5.1)
    sim.send(OfferDeclined(sim.open_offer("b")))
    assert sim.offered_to("t1") == ["a"]  # out of its cooldown


def test_a_delivery_cooldown_shorter_than_the_decline_cooldown_keeps_the_longer() -> None:
    sim = sim_of("a", decline_cooldown=30.0, delivery_cooldown=5.0)
    sim.send(TaskCreated("t1", "q"))
    sim.send(OfferAccepted(sim.open_offer("a")))
    sim.send(DeliveryFailed("t1", 19))
    sim.advance(29.9)
    assert sim.offered_to("t1") == []
    sim.advance(0.2)
    assert sim.offered_to("t1") == ["a"]


def test_an_expert_who_may_not_decline_is_not_called_again_within_the_cooldown() -> None:
    sim = sim_of("a", may_decline=False, delivery_cooldown=8.0, max_delivery_failures=0)
    sim.send(TaskCreated("t1", "q"))
    assert sim.status("t1") == "assigned"
    sim.send(DeliveryFailed("t1", 8))
    assert sim.status("t1") == "queued"
    sim.advance(7.9)
    assert sim.status("t1") == "queued"
    sim.advance(0.2)
    assert sim.status("t1") == "assigned"
    assert len([c for c in sim.log if isinstance(c, ReturnLabel)]) == 2


def test_max_delivery_failures_sets_the_expert_away_with_the_phone_failed_notice() -> None:
    sim = sim_of("a", "b", max_wait=600.0)
    sim.send(PresenceChanged("b", "dnd"))
    sim.send(TaskCreated("t1", "q"))
    fail_at_once(sim, 11.0)  # failures at 0, 5 and 10 s
    assert NotifyExpert("a", "phone_failed", 3) in sim.log
    assert sim.core.expert_state("a")["presence"] == "away"  # type: ignore[index]
    assert sim.emitted("expert.presence")[-1]["source"] == "max_delivery_failures"
    assert sim.status("t1") == "queued"
    assert len(sim.records("attempt")) == 3
    sim.send(PresenceChanged("a", "available"))  # back: the count starts again
    assert sim.core.expert_state("a")["delivery_failures"] == 0  # type: ignore[index]


def test_a_connected_call_resets_the_count_of_failures() -> None:
    sim = sim_of("a")
    sim.send(TaskCreated("t1", "q"))
    sim.send(OfferAccepted(sim.open_offer("a")))
    sim.send(DeliveryFailed("t1", 19))
    sim.advance(5)
    sim.send(OfferAccepted(sim.open_offer("a")))
    sim.send(DeliveryFailed("t1", 8))
    assert sim.core.expert_state("a")["delivery_failures"] == 2  # type: ignore[index]
    sim.advance(5)
    sim.send(OfferAccepted(sim.open_offer("a")))
    sim.send(CallConnected("t1"))
    assert sim.core.expert_state("a")["delivery_failures"] == 0  # type: ignore[index]
    assert not [c for c in sim.log if isinstance(c, NotifyExpert)]


def test_the_queue_settings_and_their_defaults() -> None:
    spec = queue_spec(Queue(id="q", name="Q", select="true"))
    assert (spec.delivery_cooldown, spec.max_delivery_failures) == (5.0, 3)
    spec = queue_spec(
        Queue(id="q", name="Q", select="true", delivery_cooldown=12, max_delivery_failures=0)
    )
    assert (spec.delivery_cooldown, spec.max_delivery_failures) == (12.0, 0)


# --- IM texts around re-offers --------------------------------------------------------------


def test_a_timeout_reoffered_at_once_to_the_same_expert_is_silent() -> None:
    sim = sim_of("a", "b", offer_timeout=5.0)
    sim.send(PresenceChanged("b", "dnd"))
    sim.send(TaskCreated("t1", "q"))
    first = sim.open_offer("a")
    sim.advance(5)  # nobody else: a gets it again at once
    second = sim.open_offer("a")
    assert second != first
    (withdrawal,) = sim.withdrawals()
    assert (withdrawal.offer_id, withdrawal.reason) == (first, "reoffered")
    assert sim.emitted("offer.timeout")[0]["offer_id"] == first  # the feed still says so


def test_a_timeout_that_goes_to_someone_else_says_so() -> None:
    sim = sim_of("a", "b", offer_timeout=5.0)
    sim.send(TaskCreated("t1", "q"))
    first = sim.open_offer("a")
    sim.advance(5)
    assert sim.offered_to("t1") == ["b"]
    assert sim.withdrawals() == [
        WithdrawOffer(first, "t1", "a", sim.core.task("t1")["code"], "timeout")
    ]  # type: ignore[index]
