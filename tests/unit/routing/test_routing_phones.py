"""An accept may ask for another phone only among the expert's numbers or the queue's
``accept_phones``; anything else is refused and changes nothing (the offer stays open)."""

from __future__ import annotations

import pytest
from routing_sim import Sim, config, expert

from expertline.routing.commands import AnswerRefused, ReturnLabel
from expertline.routing.events import OfferAccepted, TaskCreated
from expertline.routing.model import QueueSpec
from expertline.routing.phones import accepted_label, normalize

ALICE = expert("a", phones=("+1 (555) 123-4567", "sip:desk@pbx.example.test"))


def one(accept_phones: str | None = None) -> Sim:
    sim = Sim(config([ALICE], [QueueSpec("q", "Q", accept_phones=accept_phones)]))
    sim.available("a", step=1)
    sim.send(TaskCreated("t1", "q"))
    return sim


@pytest.mark.parametrize(
    "asked",
    [
        "sip:attacker.example.net:5060",
        "sip:1001@pbx.example.test;maddr=203.0.113.9",
        "+447700900123",
        "sip:a@pbx.example.test ",
    ],
)
def test_a_phone_that_is_none_of_the_experts_numbers_is_refused(asked: str) -> None:
    sim = one()
    oid = sim.open_offer("a")
    assert sim.send(OfferAccepted(oid, asked)) == [AnswerRefused(oid, "a", "phone")]
    assert sim.status("t1") == "offered" and sim.open_offer("a") == oid
    assert sim.labels() == []
    sim.send(OfferAccepted(oid))  # the offer is still open: the expert's own phone works
    assert [c.label for c in sim.labels()] == [ALICE.phone]


@pytest.mark.parametrize(
    ("asked", "label"),
    [
        ("sip:a@pbx.example.test", "sip:a@pbx.example.test"),  # phone
        ("+15551234567", "+1 (555) 123-4567"),  # phones, as configured
        ("+1-555-123-4567", "+1 (555) 123-4567"),
        ("sip:desk@pbx.example.test", "sip:desk@pbx.example.test"),
    ],
)
def test_the_experts_own_numbers_are_accepted(asked: str, label: str) -> None:
    sim = one()
    oid = sim.open_offer("a")
    out = sim.send(OfferAccepted(oid, asked))
    assert [c for c in out if isinstance(c, ReturnLabel)] == [ReturnLabel("t1", label, "a")]


def test_the_queues_pattern_allows_other_numbers() -> None:
    sim = one(accept_phones=r"\+1\d{10}")
    oid = sim.open_offer("a")
    assert sim.send(OfferAccepted(oid, "+44 7700 900123")) == [AnswerRefused(oid, "a", "phone")]
    out = sim.send(OfferAccepted(oid, "+1.555.987.6543"))
    assert [c.label for c in out if isinstance(c, ReturnLabel)] == ["+15559876543"]


def test_matching_is_whole_and_never_raises() -> None:
    assert accepted_label("+15559876543x", ALICE, r"\+1\d{10}") is None  # whole match only
    assert accepted_label("+15559876543", ALICE, "(unclosed") is None
    assert normalize("tel:+1-555-123-4567") == "tel:+15551234567"
    assert normalize("sip:+1-555@pbx.example.test") == "sip:+1-555@pbx.example.test"
