"""Outputs of the routing core: effects the runtime carries out after persisting them.

The runtime writes every command of a transition to its outbox in the same database
transaction as the new state, then performs them (IM texts, label to the routing client,
records, timers). Records (RCD/TCD) and feed events are data here; their storage is not.

Commands are read-only values: every field is ``Final``, so the type checker refuses an
assignment. They are not ``frozen`` dataclasses, whose ``__init__`` sets each field through
``object.__setattr__`` (2.5 times the cost, on the path every task takes); ``replace`` makes a
changed copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal

from expertline.routing.timers import TimerKey


@dataclass(slots=True)
class SendOffer:
    """Offer a task to an expert. ``notice_only``: the expert may not decline, no question asked."""

    offer_id: Final[str]
    task_id: Final[str]
    expert_id: Final[str]
    code: Final[str]
    expires_at: Final[float | None]
    notice_only: Final[bool] = False


@dataclass(slots=True)
class WithdrawOffer:
    offer_id: Final[str]
    task_id: Final[str]
    expert_id: Final[str]
    code: Final[str]
    # ``reoffered``: the offer timed out and the same expert got the task again at once (the
    # channel says nothing: the new offer follows).
    reason: Final[
        Literal["taken", "ended", "presence", "timeout", "reoffered", "overflow", "config"]
    ]


@dataclass(slots=True)
class ConfirmAccepted:
    """Tell the winner the task is theirs (the IM ``Accepted #code`` line)."""

    offer_id: Final[str]
    task_id: Final[str]
    expert_id: Final[str]
    code: Final[str]


@dataclass(slots=True)
class AnswerRefused:
    """An accept/decline that changes nothing (late, unknown, already decided)."""

    offer_id: Final[str]
    expert_id: Final[str | None]
    reason: Final[
        Literal["unknown", "closed", "capacity", "phone"]
    ]  # phone: not one it may ask for


@dataclass(slots=True)
class NotifyExpert:
    """An IM notice to an expert: set to away after ``max_no_answer`` unanswered offers
    (``set_away``) or ``max_delivery_failures`` failed calls (``phone_failed``), ``count`` of
    them; or routing moved to the other node of an HA pair (their offers and tasks go on)."""

    expert_id: Final[str]
    message: Final[Literal["set_away", "phone_failed", "failover"]]
    count: Final[int] = 0


@dataclass(slots=True)
class ReturnLabel:
    """The routing result: deliver the task to ``label`` (the core also writes the RCD)."""

    task_id: Final[str]
    label: Final[str]
    expert_id: Final[str | None]  # None for a fallback label at max wait


@dataclass(slots=True)
class WriteRecord:
    """A routing record: ``rcd``, ``tcd``, or ``attempt`` (a requeued delivery, disposition 19/8).

    Exactly one ``tcd`` per task, written when the task ends; ``data`` holds the SPEC §7 fields
    the core knows (times as core-clock seconds, durations in seconds).
    """

    kind: Final[Literal["rcd", "tcd", "attempt"]]
    data: Final[dict[str, Any]]


@dataclass(slots=True)
class Emit:
    """A named transition for the events feed (task.created, offer.accepted, expert.state...)."""

    type: Final[str]
    data: Final[dict[str, Any]] = field(default_factory=dict)


@dataclass(slots=True)
class SetTimer:
    """Fire ``TimerFired(key)`` at ``at`` (core clock seconds). Setting a key again moves it."""

    key: Final[TimerKey]
    at: Final[float]


@dataclass(slots=True)
class CancelTimer:
    key: Final[TimerKey]


Command = (
    SendOffer
    | WithdrawOffer
    | ConfirmAccepted
    | AnswerRefused
    | NotifyExpert
    | ReturnLabel
    | WriteRecord
    | Emit
    | SetTimer
    | CancelTimer
)
