"""The transition tables, the errors they raise, and the diagrams drawn from them."""

from __future__ import annotations

from pathlib import Path

import pytest

from expertline.routing import diagram
from expertline.routing.states import (
    FINAL_OFFER,
    FINAL_TASK,
    OFFER_TRANSITIONS,
    TASK_TRANSITIONS,
    IllegalTransition,
    OfferStatus,
    OfferTrigger,
    TaskStatus,
    TaskTrigger,
    advance_offer,
    advance_task,
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
    assert advance_task(TaskStatus.QUEUED, TaskTrigger.OFFER) is TaskStatus.OFFERED
    with pytest.raises(IllegalTransition) as err:
        advance_task(TaskStatus.COMPLETED, TaskTrigger.ACCEPT)
    assert (err.value.kind, err.value.state, err.value.trigger) == ("task", "completed", "accept")
    with pytest.raises(IllegalTransition):
        advance_task(TaskStatus.CONNECTED, TaskTrigger.ABANDON)
    with pytest.raises(IllegalTransition):
        advance_offer(OfferStatus.WITHDRAWN, OfferTrigger.ACCEPT)
    assert advance_offer(OfferStatus.OPEN, OfferTrigger.EXPIRE) is OfferStatus.TIMEOUT


def test_the_committed_diagrams_match_the_tables() -> None:
    assert DOC.read_text() == diagram.render(), (
        "docs/routing-states.md is stale: python -m expertline.routing.diagram > docs/routing-states.md"
    )


def test_the_diagram_draws_every_transition() -> None:
    text = diagram.render()
    for state, out in TASK_TRANSITIONS.items():
        for trigger, target in out.items():
            assert f"    {state} --> {target}: {trigger}" in text
