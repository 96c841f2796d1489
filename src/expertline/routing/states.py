"""Task and offer lifecycles as machines of the state-machine kit (``expertline.machine``).

``TASK`` and ``OFFER`` are the single source of truth: the core moves tasks and offers only
through their ``fire`` (``restore`` for a stored status), the Mermaid diagrams in
``docs/routing-states.md`` are drawn from them, and a transition that is not in a table
raises ``IllegalTransition`` (the core asks ``allows`` first for external inputs, so a late
or duplicate event is a quiet no-op rather than an error).
"""

from __future__ import annotations

from enum import StrEnum

from expertline.machine import IllegalTransition as IllegalTransition  # raised by ``fire``
from expertline.machine import Machine


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

TASK_START = T.QUEUED
OFFER_START = OS.OPEN
TASK: Machine[TaskStatus, TaskTrigger] = Machine("task", TASK_TRANSITIONS, TASK_START)
OFFER: Machine[OfferStatus, OfferTrigger] = Machine("offer", OFFER_TRANSITIONS, OFFER_START)

WAITING: frozenset[TaskStatus] = frozenset({T.QUEUED, T.OFFERED})
"""A task still looking for an expert (it sits in its queue's ordering)."""

WITH_EXPERT: frozenset[TaskStatus] = frozenset({T.ASSIGNED, T.CONNECTED})
"""A task that holds one unit of its expert's capacity."""

FINAL_TASK: frozenset[TaskStatus] = TASK.final
FINAL_OFFER: frozenset[OfferStatus] = OFFER.final
