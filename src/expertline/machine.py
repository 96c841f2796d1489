"""One small kit for every state machine of the product: transitions as data, no I/O.

A ``Machine`` is a table ``state -> trigger -> new state`` (optionally with the name of the
action a transition runs), built once at import. Objects keep their own state value; they move
only through ``fire`` (an undefined transition raises ``IllegalTransition``, a bug when it
happens) after asking ``allows`` for outside inputs, and a stored state is read back through
``restore`` (an unknown value raises instead of entering a state nobody drew). The Mermaid
diagrams in ``docs/`` are drawn by ``mermaid`` from the same tables, so they cannot drift.

The task and offer lifecycles, the presence link, SIP transactions and SIP call flows are
machines of this kit; the routing core, the XMPP supervisor and the SIP front hold the states.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

S = TypeVar("S", bound=str)
T = TypeVar("T", bound=str)


class IllegalTransition(Exception):
    """A trigger that the table does not allow in the current state."""

    def __init__(self, machine: str, state: str, trigger: str) -> None:
        super().__init__(f"{machine}: no transition from {str(state)!r} on {str(trigger)!r}")
        self.machine = machine
        self.state = state
        self.trigger = trigger


class UnknownState(ValueError):
    """A stored value that names no state of the machine."""


@dataclass(frozen=True)
class Machine(Generic[S, T]):
    """A finite state machine as a table; immutable, shared by every object it drives.

    ``table[state][trigger]`` is the new state; a state with no row is final. ``actions``
    names what a transition does (SIP transactions: the method that builds its commands);
    ``initial`` is where new objects start (a diagram draws ``[*] --> initial``).
    """

    name: str
    table: Mapping[S, Mapping[T, S]]
    initial: S | Iterable[S]
    actions: Mapping[tuple[S, T], str] = field(default_factory=dict)
    _states: frozenset[S] = field(init=False, repr=False, compare=False)
    _initial: tuple[S, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        states: set[S] = set(self.table)
        for row in self.table.values():
            states.update(row.values())
        initial = (self.initial,) if isinstance(self.initial, str) else tuple(self.initial)
        unknown = [s for s in initial if s not in states]
        if unknown:
            raise ValueError(f"{self.name}: initial state(s) {unknown} are not in the table")
        missing = [key for key in self.actions if key[1] not in self.table.get(key[0], {})]
        if missing:
            raise ValueError(f"{self.name}: actions for transitions not in the table: {missing}")
        object.__setattr__(self, "_states", frozenset(states))
        object.__setattr__(self, "_initial", initial)

    # --- moving ----------------------------------------------------------------------------

    def allows(self, state: S, trigger: T) -> bool:
        row = self.table.get(state)
        return row is not None and trigger in row

    def fire(self, state: S, trigger: T) -> S:
        """The state after ``trigger``; ``IllegalTransition`` when the table has none."""
        try:
            return self.table[state][trigger]
        except KeyError:
            raise IllegalTransition(self.name, state, trigger) from None

    def step(self, state: S, trigger: T) -> tuple[S, str | None]:
        """``fire`` plus the name of the transition's action (None: it has none)."""
        return self.fire(state, trigger), self.actions.get((state, trigger))

    def restore(self, value: str, parse: type[S] | None = None) -> S:
        """A stored state read back: ``parse`` (a StrEnum) turns text into the state type."""
        if value not in self._states:  # a StrEnum member equals its text
            raise UnknownState(f"{self.name}: {value!r} is not a state")
        return parse(value) if parse is not None else value

    # --- reading ---------------------------------------------------------------------------

    @property
    def states(self) -> frozenset[S]:
        return self._states

    def is_final(self, state: S) -> bool:
        return not self.table.get(state)

    @property
    def final(self) -> frozenset[S]:
        return frozenset(s for s in self._states if not self.table.get(s))

    def triggers(self, state: S) -> tuple[T, ...]:
        return tuple(self.table.get(state, {}))

    def mermaid(self, *, title: str | None = None, fence: bool = True) -> str:
        """A Mermaid ``stateDiagram-v2`` of the table: every transition labelled with its
        trigger (and action), ``[*]`` into the initial states and out of the final ones."""
        lines = ["```mermaid"] if fence else []
        if title:
            lines += ["---", f"title: {title}", "---"]
        lines.append("stateDiagram-v2")
        lines += [f"    [*] --> {_node(s)}" for s in self._initial]
        for state, row in self.table.items():
            for trigger, target in row.items():
                action = self.actions.get((state, trigger))
                label = f"{trigger} / {action}" if action else str(trigger)
                lines.append(f"    {_node(state)} --> {_node(target)}: {label}")
        order = list(self.table) + sorted(self._states - set(self.table))
        lines += [f"    {_node(s)} --> [*]" for s in order if not self.table.get(s)]
        if fence:
            lines.append("```")
        return "\n".join(lines)


def _node(state: str) -> str:
    """A state's name as a Mermaid node id (Mermaid ids cannot hold ``-`` or spaces)."""
    return str(state).replace("-", "_").replace(" ", "_")
