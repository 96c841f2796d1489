"""The state-machine kit: tables, fire/allows/step, restore, diagrams."""

from __future__ import annotations

from enum import StrEnum

import pytest

from expertline.machine import IllegalTransition, Machine, UnknownState


class Light(StrEnum):
    OFF = "off"
    ON = "on"
    BROKEN = "broken"


class Press(StrEnum):
    PUSH = "push"
    SMASH = "smash"


LAMP: Machine[Light, Press] = Machine(
    "lamp",
    {
        Light.OFF: {Press.PUSH: Light.ON, Press.SMASH: Light.BROKEN},
        Light.ON: {Press.PUSH: Light.OFF, Press.SMASH: Light.BROKEN},
        Light.BROKEN: {},
    },
    initial=Light.OFF,
    actions={(Light.OFF, Press.PUSH): "glow"},
)


def test_fire_follows_the_table_and_refuses_what_it_lacks() -> None:
    assert LAMP.fire(Light.OFF, Press.PUSH) is Light.ON
    assert LAMP.allows(Light.ON, Press.SMASH)
    assert not LAMP.allows(Light.BROKEN, Press.PUSH)
    with pytest.raises(IllegalTransition, match="lamp: no transition from 'broken' on 'push'"):
        LAMP.fire(Light.BROKEN, Press.PUSH)


def test_step_names_the_action_of_a_transition() -> None:
    assert LAMP.step(Light.OFF, Press.PUSH) == (Light.ON, "glow")
    assert LAMP.step(Light.ON, Press.PUSH) == (Light.OFF, None)


def test_final_states_are_those_without_a_way_out() -> None:
    assert LAMP.final == {Light.BROKEN}
    assert LAMP.is_final(Light.BROKEN) and not LAMP.is_final(Light.ON)
    assert LAMP.triggers(Light.OFF) == (Press.PUSH, Press.SMASH)


def test_restore_reads_a_stored_state_and_refuses_an_unknown_one() -> None:
    assert LAMP.restore("on", Light) is Light.ON
    with pytest.raises(UnknownState):
        LAMP.restore("dim", Light)


def test_a_table_with_a_wrong_initial_state_or_action_is_refused_when_built() -> None:
    with pytest.raises(ValueError, match="initial"):
        Machine("bad", {"a": {"go": "b"}}, initial="c")
    with pytest.raises(ValueError, match="actions"):
        Machine("bad", {"a": {"go": "b"}}, initial="a", actions={("b", "go"): "x"})


def test_mermaid_draws_every_transition_entry_and_exit() -> None:
    text = LAMP.mermaid()
    assert text.splitlines() == [
        "```mermaid",
        "stateDiagram-v2",
        "    [*] --> off",
        "    off --> on: push / glow",
        "    off --> broken: smash",
        "    on --> off: push",
        "    on --> broken: smash",
        "    broken --> [*]",
        "```",
    ]


def test_mermaid_node_ids_have_no_dashes() -> None:
    m: Machine[str, str] = Machine("m", {"wrap-up": {"done": "idle"}}, initial="wrap-up")
    assert "wrap_up --> idle: done" in m.mermaid(fence=False)
