"""docs/sip-states.md is drawn from the SIP machines; it cannot drift from them."""

from __future__ import annotations

from pathlib import Path

from expertline.sip import call_states, calls, diagram
from expertline.sip.transaction import MACHINES

DOC = Path(__file__).resolve().parents[3] / "docs" / "sip-states.md"


def test_the_committed_sip_states_match_the_tables() -> None:
    assert DOC.read_text() == diagram.render(), (
        "docs/sip-states.md is stale: python -m expertline.sip.diagram > docs/sip-states.md"
    )


def test_every_machine_and_transition_is_drawn() -> None:
    text = diagram.render()
    machines = [*MACHINES, call_states.REDIRECT_FLOW, call_states.PROXY_FLOW]
    for machine in machines:
        assert machine.mermaid() in text, machine.name
    assert text.count("```mermaid") == len(machines)
    assert "    creating --> ringing: ring" in text  # proxy mode only
    assert "    completed --> completed: timer_G / retransmit_final" in text


def test_every_call_step_is_explained_and_every_accepted_event_listed() -> None:
    text = diagram.render()
    for step in call_states.CallStep:
        assert f"| `{step}` | {call_states.STEP_MEANINGS[step]} |" in text
    assert text.count("\n| done | ") == sum(1 for state, _ in calls.HANDLERS if state == "done")
