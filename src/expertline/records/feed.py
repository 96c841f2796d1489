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

from typing import Literal, TypedDict

TASK_RECORD = "task.record"
EXPERT_STATE = "expert.state"

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
