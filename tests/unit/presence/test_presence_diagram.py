"""docs/presence-states.md is drawn from the presence link machine; it cannot drift from it."""

from __future__ import annotations

from pathlib import Path

from expertline.presence import diagram
from expertline.presence.link import LINK, TRANSITIONS, LinkEvent

DOC = Path(__file__).resolve().parents[3] / "docs" / "presence-states.md"


def test_the_committed_presence_states_match_the_table() -> None:
    assert DOC.read_text() == diagram.render(), (
        "docs/presence-states.md is stale:"
        " python -m expertline.presence.diagram > docs/presence-states.md"
    )


def test_every_transition_and_event_is_drawn() -> None:
    text = diagram.render()
    assert LINK.mermaid() in text
    assert text.count("```mermaid") == 1
    assert "    [*] --> stopped" in text
    assert "    waiting --> connecting: retry" in text
    for (state, event), target in TRANSITIONS.items():
        assert f"| {state} | {event} | {target} |" in text
    for event in LinkEvent:
        assert f"| `{event}` |" in text


def test_the_machine_has_no_final_state_and_stop_is_allowed_everywhere() -> None:
    assert LINK.final == frozenset()
    assert all(LINK.allows(state, LinkEvent.STOP) for state in LINK.states)
