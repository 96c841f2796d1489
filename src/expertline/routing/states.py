"""Task and offer lifecycles as data: ``TRANSITIONS[state][trigger] -> new state``.

The tables are the single source of truth: the core moves objects only through ``advance``,
the Mermaid diagrams in ``docs/routing-states.md`` are drawn from them, and a transition that
is not in a table raises ``IllegalTransition`` (the core checks ``allowed`` first for external
inputs, so a late or duplicate event is a quiet no-op rather than an error).
"""

from __future__ import annotations

from enum import StrEnum


class IllegalTransition(Exception):
    """An event that the table does not allow in the current state (a bug when raised)."""

    def __init__(self, kind: str, state: str, trigger: str) -> None:
        super().__init__(f"{kind}: no transition from {state!r} on {trigger!r}")
        self.kind = kind
        self.state = state
        self.trigger = trigger


class TaskStatus(StrEnum):
    QUEUED = "queued"
    OFFERED = "offered"
    ASSIGNED = "assigned"
    CONNECTED = "connected"
    COMPLETED = "completed"
    ABANDONED = "abandoned"
    OVERFLOWED = "overflowed"
    REJECTED = "rejected"
    FAILED = "failed"


class TaskTrigger(StrEnum):
    OFFER = "offer"  # an offer went out
    OFFERS_CLOSED = "offers_closed"  # the last open offer was declined / timed out / withdrawn
    ACCEPT = "accept"  # an expert accepted (or a may-not-decline expert was chosen)
    CONNECT = "connect"  # the call was answered by the expert
    END = "end"  # the call or chat ended normally
    ABANDON = "abandon"  # the caller gave up
    FAIL = "fail"  # the routing client reports a failure
    DELIVERY_FAILED = "delivery_failed"  # ring no answer / busy: back to the queue
    OVERFLOW = "overflow"  # max wait: moved to another queue (same task)
    FALLBACK = "fallback"  # max wait: sent to a fallback label
    REJECT = "reject"  # max wait with no fallback, or its queue was removed
    LOST = "lost"  # outcome unknown after a node failure (TCD 27)
    EXPIRE = "expire"  # still with its expert at max_task_lifetime, end never reported (TCD 41)


class OfferStatus(StrEnum):
    OPEN = "open"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    TIMEOUT = "timeout"
    WITHDRAWN = "withdrawn"


class OfferTrigger(StrEnum):
    ACCEPT = "accept"
    DECLINE = "decline"
    EXPIRE = "expire"
    WITHDRAW = "withdraw"


T = TaskStatus
TT = TaskTrigger

_WAITING_EXITS: dict[TaskTrigger, TaskStatus] = {
    TT.ACCEPT: T.ASSIGNED,
    TT.ABANDON: T.ABANDONED,
    TT.FAIL: T.FAILED,
    TT.OVERFLOW: T.QUEUED,
    TT.FALLBACK: T.OVERFLOWED,
    TT.REJECT: T.REJECTED,
    TT.LOST: T.FAILED,
}

TASK_TRANSITIONS: dict[TaskStatus, dict[TaskTrigger, TaskStatus]] = {
    T.QUEUED: {TT.OFFER: T.OFFERED, **_WAITING_EXITS},
    T.OFFERED: {TT.OFFER: T.OFFERED, TT.OFFERS_CLOSED: T.QUEUED, **_WAITING_EXITS},
    T.ASSIGNED: {
        TT.CONNECT: T.CONNECTED,
        TT.END: T.COMPLETED,
        TT.ABANDON: T.ABANDONED,
        TT.FAIL: T.FAILED,
        TT.DELIVERY_FAILED: T.QUEUED,
        TT.LOST: T.FAILED,
        TT.EXPIRE: T.FAILED,
    },
    T.CONNECTED: {TT.END: T.COMPLETED, TT.FAIL: T.FAILED, TT.LOST: T.FAILED, TT.EXPIRE: T.FAILED},
    T.COMPLETED: {},
    T.ABANDONED: {},
    T.OVERFLOWED: {},
    T.REJECTED: {},
    T.FAILED: {},
}

OS = OfferStatus
OT = OfferTrigger

OFFER_TRANSITIONS: dict[OfferStatus, dict[OfferTrigger, OfferStatus]] = {
    OS.OPEN: {
        OT.ACCEPT: OS.ACCEPTED,
        OT.DECLINE: OS.DECLINED,
        OT.EXPIRE: OS.TIMEOUT,
        OT.WITHDRAW: OS.WITHDRAWN,
    },
    OS.ACCEPTED: {},
    OS.DECLINED: {},
    OS.TIMEOUT: {},
    OS.WITHDRAWN: {},
}

WAITING: frozenset[TaskStatus] = frozenset({T.QUEUED, T.OFFERED})
"""A task still looking for an expert (it sits in its queue's ordering)."""

WITH_EXPERT: frozenset[TaskStatus] = frozenset({T.ASSIGNED, T.CONNECTED})
"""A task that holds one unit of its expert's capacity."""

FINAL_TASK: frozenset[TaskStatus] = frozenset(s for s, out in TASK_TRANSITIONS.items() if not out)
FINAL_OFFER: frozenset[OfferStatus] = frozenset(
    s for s, out in OFFER_TRANSITIONS.items() if not out
)


def advance_task(state: TaskStatus, trigger: TaskTrigger) -> TaskStatus:
    try:
        return TASK_TRANSITIONS[state][trigger]
    except KeyError:
        raise IllegalTransition("task", state, trigger) from None


def advance_offer(state: OfferStatus, trigger: OfferTrigger) -> OfferStatus:
    try:
        return OFFER_TRANSITIONS[state][trigger]
    except KeyError:
        raise IllegalTransition("offer", state, trigger) from None


def task_allows(state: TaskStatus, trigger: TaskTrigger) -> bool:
    return trigger in TASK_TRANSITIONS[state]


def offer_allows(state: OfferStatus, trigger: OfferTrigger) -> bool:
    return trigger in OFFER_TRANSITIONS[state]
