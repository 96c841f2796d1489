"""Mermaid state diagrams and tables drawn from the SIP machines (``sip.transaction``,
``sip.call_states``, and which events ``sip.calls`` accepts in each state).

``render()`` gives the whole ``docs/sip-states.md``; a unit test fails when the committed file
differs, so the docs cannot drift from the tables. Regenerate with
``python -m expertline.sip.diagram > docs/sip-states.md``.
"""

from __future__ import annotations

from expertline.sip import call_states, calls
from expertline.sip.transaction import MACHINES, markdown_tables

INTRO = """\
# SIP states

Generated from `src/expertline/sip/transaction.py`, `call_states.py` and `calls.py` by
`python -m expertline.sip.diagram`; do not edit by hand (a test compares this file with the
tables). What the front does around them is in [sip.md](sip.md).

A transition that is not drawn here does not exist: an event that a state does not accept
changes nothing (the front logs it at debug level and drops it; the network repeats and
reorders).
"""

TRANSACTIONS = """\
## Transactions

RFC 3261 §17, with RFC 6026's Accepted state for 2xx responses. Each arrow is labelled
`event / action`; `timer_X` is timer X firing (the timers' values are in sip.md). Every
transition into `terminated` also tells the front to forget the transaction.
"""

CALLS = """\
## Call flows

One per INVITE to an entry point. The mode is the entry point's `sip_mode`, else the node's
`--sip-mode`. Each arrow is a decision of the call flow, taken on an event (below); the
decision's sentence is logged (`sip call decided ... decision=...`).
"""


def _steps() -> str:
    lines = ["| step | what happens |", "|---|---|"]
    lines += [f"| `{step}` | {call_states.STEP_MEANINGS[step]} |" for step in call_states.CallStep]
    return "\n".join(lines) + "\n"


def _events() -> str:
    """Which events each state accepts (``calls.HANDLERS``) and the method that weighs them."""
    lines = [
        "### Events each state accepts\n",
        "A fired timer is named by the timer (`ring`, `refresh`, `max_call`); any other",
        "(state, event) pair is dropped.\n",
        "| state | event | weighed by |",
        "|---|---|---|",
    ]
    for (state, key), handler in calls.HANDLERS.items():
        event = f"timer `{key}`" if isinstance(key, calls.CallTimer) else f"`{key.__name__}`"
        lines.append(f"| {state} | {event} | {handler.__name__.strip('_').replace('_', ' ')} |")
    return "\n".join(lines) + "\n"


def render() -> str:
    """The full Markdown document."""
    parts = [INTRO, TRANSACTIONS]
    for machine in MACHINES:
        parts += [f"### {machine.name}\n", machine.mermaid(), ""]
    parts += ["### Transition tables\n", markdown_tables()]
    parts += [CALLS, _steps()]
    for flow in (call_states.REDIRECT_FLOW, call_states.PROXY_FLOW):
        parts += [f"### {flow.name.capitalize()}\n", flow.mermaid(), ""]
    parts.append(_events())
    return "\n".join(parts)


if __name__ == "__main__":  # pragma: no cover
    print(render(), end="")
