"""The runtime's durable feed: one ordered table of everything that happened.

Table ``routing_feed`` (created by the runtime's migration): ``id`` (ascending in commit order;
the runtime is the only writer), ``type``, ``task_id``, ``expert_id``, ``data`` (JSON),
``created_at``. Rows are written in the same transaction as the state change they describe.

Consumers:
- ``GET /api/v1/events`` serves every row (cursor = ``id``).
- The reporting role reads two types: ``task.record`` (the complete record of a task, written
  once when the task ends) and ``expert.state`` (each change of an expert's state, as it
  happens). Delivery to reporting is at-least-once; ingestion is idempotent by ``task_id``
  (records) and by feed ``id`` (states).
"""

from __future__ import annotations

from typing import Literal, NamedTuple, TypedDict

TASK_RECORD = "task.record"
EXPERT_STATE = "expert.state"


class EventType(NamedTuple):
    """One kind of feed row: its name, when it is written and what its ``data`` holds."""

    name: str
    when: str
    data: str


#: Every type the runtime writes to the feed, in the order a task meets them. The one list:
#: ``GET /api/v1/events?type=`` accepts these names only, and the table in ``docs/api.md`` is
#: drawn from it (``python -m expertline.records.feed``). Names follow Twilio TaskRouter's
#: ``task.*`` / ``reservation.*`` events (an offer is a reservation) and Asterisk's queue_log.
EVENT_TYPES: tuple[EventType, ...] = (
    EventType(
        "task.created",
        "a task was created (HTTP or SIP); queue_log ENTERQUEUE",
        "`code`, `queue_id`, `channel`, `priority`, `external_id`",
    ),
    EventType(
        "task.queued",
        "the task waits in a queue: after creation, a requeue or a move",
        "`queue_id`, `priority`",
    ),
    EventType(
        "offer.created",
        "an offer went to an expert (TaskRouter reservation.created)",
        "`offer_id`, `queue_id`, `expires_at`; `notice_only` for an expert who may not decline",
    ),
    EventType("offer.accepted", "the expert accepted; queue_log CONNECT follows", "`offer_id`"),
    EventType("offer.declined", "the expert declined (reservation.rejected)", "`offer_id`"),
    EventType(
        "offer.timeout",
        "the expert did not answer in time; queue_log RINGNOANSWER",
        "`offer_id`",
    ),
    EventType(
        "offer.withdrawn",
        "the offer was closed by the system (reservation.rescinded / canceled)",
        "`offer_id`, `reason` (`taken`, `presence`, `ended`, `overflow`, `config`)",
    ),
    EventType(
        "task.assigned",
        "an expert has the task; its label was returned",
        "`queue_id`, `label`",
    ),
    EventType("task.connected", "the call reached the expert and was answered", ""),
    EventType(
        "task.moved",
        "max wait passed and the task moved to the overflow queue (same task)",
        "`from_queue`, `queue_id`, `reason` (`max_wait`)",
    ),
    EventType(
        "task.escalated",
        "an escalation step of the queue widened who may be offered the task",
        "`queue_id`, `step` (its index in the queue's `escalation`)",
    ),
    EventType(
        "task.requeued",
        "delivery failed (ring no answer 19, busy 8); the task waits again",
        "`queue_id`, `disposition`",
    ),
    EventType(
        "task.attempt",
        "the record of that failed delivery (read by reporting)",
        "`expert_id`, `disposition`, `at`",
    ),
    EventType(
        "task.completed",
        "the task ended normally; queue_log COMPLETECALLER/COMPLETEAGENT",
        "`queue_id`, `call_disposition`",
    ),
    EventType(
        "task.abandoned", "the caller gave up; queue_log ABANDON", "`queue_id`, `call_disposition`"
    ),
    EventType(
        "task.overflowed",
        "max wait passed and the fallback label was returned; queue_log EXITWITHTIMEOUT",
        "`queue_id`, `call_disposition`",
    ),
    EventType(
        "task.rejected",
        "max wait passed with no fallback, or the queue was removed",
        "`queue_id`, `call_disposition`",
    ),
    EventType(
        "task.failed",
        "the task failed (reported by the client, lost in a failover, max lifetime)",
        "`queue_id`, `call_disposition`",
    ),
    EventType(
        TASK_RECORD,
        "once per task, when it ends: its complete record (read by reporting)",
        "the task record (times, offers, attempts, disposition)",
    ),
    EventType(
        "expert.presence",
        "an expert's presence changed (IM, REST, console)",
        "`status`, `previous`, `source`",
    ),
    EventType(
        EXPERT_STATE,
        "an expert's routing state changed (available, reserved, busy, wrap_up, ...)",
        "`state`, `previous`, `at`, `config_version`",
    ),
)

EVENT_NAMES: frozenset[str] = frozenset(t.name for t in EVENT_TYPES)


def unknown_event_types(names: list[str] | None) -> list[str]:
    """The names in ``names`` that are not event types (in the order given)."""
    return [n for n in names or () if n not in EVENT_NAMES]


def markdown_table() -> str:
    """The event types as a Markdown table (``docs/api.md``)."""
    rows = [
        "| type | written when | `data` holds (besides `task_id`, `expert_id`) |",
        "|---|---|---|",
    ]
    rows += [f"| `{t.name}` | {t.when} | {t.data or '(nothing more)'} |" for t in EVENT_TYPES]
    return "\n".join(rows) + "\n"


DOCS_START = (
    "<!-- event types: generated from expertline/records/feed.py by "
    "`python -m expertline.records.feed` -->"
)
DOCS_END = "<!-- end of event types -->"


def render_docs(text: str) -> str:
    """``text`` (``docs/api.md``) with its event table replaced by ``markdown_table()``."""
    start = text.index(DOCS_START) + len(DOCS_START)
    end = text.index(DOCS_END)
    return text[:start] + "\n" + markdown_table() + text[end:]


OfferOutcome = Literal["accepted", "declined", "timeout", "withdrawn", "open"]
ExpertState = Literal["offline", "away", "dnd", "available", "reserved", "busy", "wrap_up"]


class OfferRecord(TypedDict):
    offer_id: str
    expert_id: str
    queue_id: str
    created_at: str  # ISO 8601 UTC
    ended_at: str | None
    outcome: OfferOutcome


class AttemptRecord(TypedDict):
    """A delivery that failed and requeued the task (SIP proxy: 19 ring no answer, 8 busy)."""

    expert_id: str
    disposition: int
    at: str


class TaskRecord(TypedDict):
    """``data`` of a ``task.record`` feed row: the whole life of one task."""

    task_id: str
    code: str
    external_id: str | None
    channel: str
    queue_id: str  # the queue the task ended in
    queues: list[str]  # every queue it visited, in order (overflow)
    status: str  # completed | abandoned | overflowed | rejected | failed
    call_disposition: int
    expert_id: str | None
    caller: str | None
    dialed_number: str | None
    created_at: str
    assigned_at: str | None
    connected_at: str | None
    ended_at: str
    wait: float  # seconds queued until assigned (or until the end when never assigned)
    ring_time: float
    talk_time: float
    work_time: float  # wrap-up seconds
    config_version: int  # in effect when the task was created
    node: str
    offers: list[OfferRecord]
    attempts: list[AttemptRecord]


class ExpertStateRecord(TypedDict):
    """``data`` of an ``expert.state`` feed row."""

    expert_id: str
    state: ExpertState
    previous: ExpertState | None
    at: str
    config_version: int


if __name__ == "__main__":  # rewrite the table in docs/api.md (from the repository's root)
    from pathlib import Path

    doc = Path("docs/api.md")
    doc.write_text(render_docs(doc.read_text()))
