"""The Mermaid state diagram and table of the presence link, drawn from ``presence.link.LINK``.

``render()`` gives the whole ``docs/presence-states.md``; a unit test fails when the committed
file differs, so the docs cannot drift from the table. Regenerate with
``python -m expertline.presence.diagram > docs/presence-states.md``.
"""

from __future__ import annotations

from expertline.presence.link import EVENT_MEANINGS, LINK, LinkEvent

INTRO = """\
# Presence link states

Generated from `src/expertline/presence/link.py` by `python -m expertline.presence.diagram`;
do not edit by hand (a test compares this file with the table). What the link does in each
state (backoff, pings, experts set offline) is in [xmpp.md](xmpp.md#the-link).

Each XMPP presence source (each link of a redundant source) runs one such machine;
`/metrics` shows the state as `expertline_presence_link_state{source, state}`. A transition
that is not drawn here does not exist: the supervisor raising on one is a bug.
"""


def _events() -> str:
    lines = ["| event | when |", "|---|---|"]
    lines += [f"| `{event}` | {EVENT_MEANINGS[event]} |" for event in LinkEvent]
    return "\n".join(lines) + "\n"


def _table() -> str:
    lines = ["| state | event | new state |", "|---|---|---|"]
    for state, row in LINK.table.items():
        lines += [f"| {state} | {event} | {target} |" for event, target in row.items()]
    return "\n".join(lines) + "\n"


def render() -> str:
    """The full Markdown document."""
    parts = [INTRO, "## The link\n", LINK.mermaid(), ""]
    parts += ["## Events\n", _events(), "## Transition table\n", _table()]
    return "\n".join(parts)


if __name__ == "__main__":  # pragma: no cover
    print(render(), end="")
