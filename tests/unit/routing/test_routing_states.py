"""The transition tables, the errors they raise, and the diagrams drawn from them."""

from __future__ import annotations

from pathlib import Path

import pytest

from expertline.machine import UnknownState
from expertline.routing import diagram
from expertline.routing.live import Offer, Task
from expertline.routing.states import (
    FINAL_OFFER,
    FINAL_TASK,
    OFFER,
    OFFER_TRANSITIONS,
    TASK,
    TASK_TRANSITIONS,
    IllegalTransition,
    OfferStatus,
    OfferTrigger,
    TaskStatus,
    TaskTrigger,
)

DOC = Path(__file__).resolve().parents[3] / "docs" / "routing-states.md"


def test_the_task_statuses_are_the_spec_ones() -> None:
    assert {s.value for s in TaskStatus} == {
        "queued",
        "offered",
        "assigned",
        "connected",
        "completed",
        "abandoned",
        "overflowed",
        "rejected",
        "failed",
    }
    assert set(TASK_TRANSITIONS) == set(TaskStatus)
    assert {"completed", "abandoned", "overflowed", "rejected", "failed"} == FINAL_TASK


def test_the_offer_statuses() -> None:
    assert {s.value for s in OfferStatus} == {
        "open",
        "accepted",
        "declined",
        "timeout",
        "withdrawn",
    }
    assert set(OFFER_TRANSITIONS) == set(OfferStatus)
    assert set(OfferStatus) - {OfferStatus.OPEN} == FINAL_OFFER


def test_every_status_is_reachable_from_the_start() -> None:
    for table, start in (
        (TASK_TRANSITIONS, TaskStatus.QUEUED),
        (OFFER_TRANSITIONS, OfferStatus.OPEN),
    ):
        seen = {start}
        todo = [start]
        while todo:
            for nxt in table[todo.pop()].values():  # type: ignore[index]
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        assert seen == set(table)


def test_undefined_transitions_raise() -> None:
    assert TASK.fire(TaskStatus.QUEUED, TaskTrigger.OFFER) is TaskStatus.OFFERED
    with pytest.raises(IllegalTransition) as err:
        TASK.fire(TaskStatus.COMPLETED, TaskTrigger.ACCEPT)
    assert (err.value.machine, err.value.state, err.value.trigger) == (
        "task",
        "completed",
        "accept",
    )
    with pytest.raises(IllegalTransition):
        TASK.fire(TaskStatus.CONNECTED, TaskTrigger.ABANDON)
    with pytest.raises(IllegalTransition):
        OFFER.fire(OfferStatus.WITHDRAWN, OfferTrigger.ACCEPT)
    assert OFFER.fire(OfferStatus.OPEN, OfferTrigger.EXPIRE) is OfferStatus.TIMEOUT


def test_a_stored_status_is_read_back_through_the_machines() -> None:
    task = Task("t1", 0, "q", "voice", 0, None, None, None, None, {}, "1234", 0.0, 1)
    row = task.to_dict()
    assert Task.from_dict(row).status is TaskStatus.QUEUED
    with pytest.raises(UnknownState, match="task: 'parked' is not a state"):
        Task.from_dict({**row, "status": "parked"})
    offer = Offer("t1.1", "t1", "e1", "q", "1234", 0.0, 20.0)
    assert Offer.from_dict({**offer.to_dict(), "status": "timeout"}).status is OfferStatus.TIMEOUT
    with pytest.raises(UnknownState, match="offer: 'lost' is not a state"):
        Offer.from_dict({**offer.to_dict(), "status": "lost"})


def test_the_committed_diagrams_match_the_tables() -> None:
    assert DOC.read_text() == diagram.render(), (
        "docs/routing-states.md is stale: python -m expertline.routing.diagram > docs/routing-states.md"
    )


def test_the_diagram_draws_every_transition() -> None:
    text = diagram.render()
    for state, out in TASK_TRANSITIONS.items():
        for trigger, target in out.items():
            assert f"    {state} --> {target}: {trigger}" in text


def test_every_timer_kind_is_documented_and_handled() -> None:
    from expertline.routing.handlers import _TIMER_HANDLERS
    from expertline.routing.timers import TimerKind

    text = diagram.render()
    assert set(_TIMER_HANDLERS) == set(TimerKind)
    for kind in TimerKind:
        assert f"| `{kind}:" in text
