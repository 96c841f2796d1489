"""Mermaid state diagrams drawn from the task and offer machines (``routing.states``).

``render()`` gives the whole ``docs/routing-states.md``; a unit test fails when the committed
file differs, so the docs cannot drift from the tables. Regenerate with
``python -m expertline.routing.diagram > docs/routing-states.md``.
"""

from __future__ import annotations

from expertline.routing import core
from expertline.routing.states import OFFER, TASK
from expertline.routing.timers import TimerKind

INTRO = """\
# Routing states

Generated from `src/expertline/routing/states.py` and `timers.py` by
`python -m expertline.routing.diagram`; do not edit by hand (a test compares this file with
the tables).

A transition that is not drawn here does not exist: the core refuses it (an event arriving
in a state that does not accept it changes nothing).
"""

TASK_NOTES = """\
- `queued`: waiting in its queue, no offer out. `offered`: waiting with offers out.
- `overflow` keeps the task (same id, code and record) and moves it to the target queue, where
  it keeps its original age for ordering; max wait and escalation restart there.
- `delivery_failed` (SIP proxy: ring no answer 19, busy 8) writes an `attempt` record and
  puts the task back in its queue; the expert gets the queue's `delivery_cooldown` for it
  (or `decline_cooldown`, when longer), and `max_delivery_failures` failures in a row set the
  expert away (`phone_failed` notice).
- `lost`: the outcome cannot be known after a node failure (TCD 27).
- Wrap-up is on the expert's side: after a handled task the expert is `wrap_up` for the
  queue's `wrap_up` seconds.
"""

DISPOSITIONS = """\
## Call dispositions written in the TCD

| how the task ended | voice | chat |
|---|---|---|
| `end` (completed) | 13 | 38 |
| `abandon` while `queued` | 2 | 36 |
| `abandon` while `offered` | 2 | 37 |
| `abandon` while `assigned` (ringing at the expert) | 3 | 37 |
| `fallback` (label at max wait) | 15 | 15 |
| `reject` (max wait without fallback, or its queue removed) | 22 | 22 |
| `fail` (routing client) | given, or 12 | given, or 12 |
| `lost` (node failure) | 27 | 27 |
| `expire` (still with its expert at `max_task_lifetime`: its end was never reported) | 41 | 41 |
"""

EXPERT_NOTES = """\
## Expert state (derived, announced as `expert.state`)

First match wins: disabled or not configured → `offline`; an active task → `busy`; wrap-up
running → `wrap_up`; presence not available → that presence (`away`, `dnd`, `offline`);
pending offers → `reserved`; otherwise `available`. An expert can take another offer while
enabled, available, out of wrap-up, with active tasks + pending offers below `max_tasks`.
"""


def _decisions() -> str:
    """The documented routing decisions, taken from the core's own docstring."""
    doc = core.__doc__ or ""
    _, _, tail = doc.partition("Decisions worth documenting")
    body = tail.split("\n", 1)[1] if "\n" in tail else ""
    return "## Routing decisions\n\n" + body.strip().replace("``", "`") + "\n"


TIMERS_INTRO = """\
## Timers

Every timer is named by a typed key (`routing.timers.TimerKey`: a kind, the object it
belongs to and, for some kinds, a detail); the runtime fires `TimerFired(key)` at the time
given by `SetTimer` (setting a key again moves it) and the core ignores a key it no longer
holds or one fired before its time (an earlier setting of a moved timer). What a due timer
does is looked up by its kind in the event handlers' table.
"""

# kind -> (key as logs write it, set when, effect)
TIMER_ROWS: dict[TimerKind, tuple[str, str, str]] = {
    TimerKind.OFFER: (
        "<offer id>",
        "an offer goes out",
        "offer `timeout`, next experts; may set the expert away",
    ),
    TimerKind.MAX_WAIT: (
        "<task id>",
        "the task enters a queue",
        "overflow, fallback label or reject",
    ),
    TimerKind.ESCALATE: (
        "<task id>:<step>",
        "the task enters a queue or a step",
        "the next selection step",
    ),
    TimerKind.COOLDOWN: (
        "<task id>:<expert id>",
        "decline / timeout / delivery failure, with a cooldown",
        "the expert may have the task again",
    ),
    TimerKind.WRAP_UP: (
        "<expert id>",
        "a handled task ends, with wrap-up",
        "the expert is free again",
    ),
    TimerKind.LIFETIME: (
        "<task id>",
        "the task is assigned (at creation + `max_task_lifetime`)",
        "still assigned or connected: its end was never reported; `failed` with TCD 41, "
        "the expert is free",
    ),
}


def _timers() -> str:
    lines = [TIMERS_INTRO, "| key | set when | effect |", "|---|---|---|"]
    for kind in TimerKind:
        key, when, effect = TIMER_ROWS[kind]
        lines.append(f"| `{kind}:{key}` | {when} | {effect} |")
    return "\n".join(lines) + "\n"


USAGE = """\
## Driving the core

```python
core = RoutingCore()
core.handle(ConfigChanged(config), now)          # always the first event
commands = core.handle(TaskCreated("t1", "billing-es"), now)
dirty = core.drain_dirty()                       # persist these, then perform the commands
rows = [core.export_task(t) for t in dirty.tasks]  # + export_offer / export_expert / export_meta
# after a restart or failover:
core = RoutingCore.restore(config, tasks, offers, experts, now, meta)
commands = core.handle(Recovered(lost_tasks=frozenset(...)), now)  # SetTimer for every live timer
```

`python -m expertline.bench.perf EXPERTS QUEUES LIFECYCLES WAITING` measures the core alone.
"""


def render() -> str:
    """The full Markdown document."""
    parts = [
        INTRO,
        "## Task\n",
        TASK.mermaid(),
        "",
        TASK_NOTES,
        "## Offer\n",
        OFFER.mermaid(),
        "",
        "An offer is withdrawn when its task ends or is taken by another expert, when the\n"
        "expert's presence leaves *available*, at overflow, or when a configuration change\n"
        "removes the expert or their match.\n",
        DISPOSITIONS,
        EXPERT_NOTES,
        _timers(),
        _decisions(),
        USAGE,
    ]
    return "\n".join(parts)


if __name__ == "__main__":  # pragma: no cover
    print(render(), end="")
