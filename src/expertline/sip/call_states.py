"""The states of a call flow and the decisions that move it, as machines of the kit: one table
per SIP mode (``REDIRECT_FLOW``, ``PROXY_FLOW``). ``sip.calls`` weighs each event and takes
these steps; docs/sip-states.md draws the tables (``sip.diagram``)."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from expertline.machine import Machine
from expertline.settings import SipMode


class CallState(StrEnum):
    NEW = "new"
    CREATING = "creating"  # the task is being created
    ABANDONING = "abandoning"  # the caller cancelled before the task existed
    QUEUED = "queued"  # the task waits for an expert (182 Queued)
    RINGING = "ringing"  # proxy mode: the expert's phone rings
    CONNECTED = "connected"  # proxy mode: the phone answered
    DONE = "done"


class CallStep(StrEnum):
    """The decisions that move a call: the triggers of the call flow machines."""

    INVITE = "invite"
    QUEUE = "queue"
    CANCEL = "cancel"
    RING = "ring"
    ANSWER = "answer"
    REQUEUE = "requeue"
    REDIRECT = "redirect"
    OVERFLOW = "overflow"
    REJECT = "reject"
    END_ELSEWHERE = "end_elsewhere"
    REFUSE = "refuse"
    ABANDON = "abandon"
    HANG_UP = "hang_up"
    EXPIRE = "expire"


STEP_MEANINGS: Mapping[CallStep, str] = {
    CallStep.INVITE: "100 Trying; the task is created",
    CallStep.QUEUE: "the task waits for an expert: 182 Queued (again every 60 s)",
    CallStep.CANCEL: "CANCEL before the task existed: 487; the task is abandoned once created",
    CallStep.RING: "an expert accepted (proxy mode, a SIP label): INVITE to the expert's phone",
    CallStep.ANSWER: "the phone answered (2xx, relayed): the task is connected",
    CallStep.REQUEUE: (
        "the phone was busy (486/600: disposition 8), failed, rang past ring_timeout, never"
        " answered, or its host is not an allowed target (19): the task is requeued"
    ),
    CallStep.REDIRECT: "an expert accepted: 302 with the label (redirect mode, or not a SIP URI)",
    CallStep.OVERFLOW: "max wait with a fallback label: 302 to it",
    CallStep.REJECT: "max wait without a fallback: 480",
    CallStep.END_ELSEWHERE: "the task ended by other means: 480",
    CallStep.REFUSE: "no task: 404 unknown number, 400 bad input, 403, 503 unavailable, 500",
    CallStep.ABANDON: "the caller gave up (CANCEL: 487); the task is abandoned",
    CallStep.HANG_UP: "BYE from either side: the task is completed",
    CallStep.EXPIRE: "no BYE seen within max_call (4 h): the task is ended",
}


STATES: tuple[CallState, ...] = tuple(CallState)

_C, _S = CallState, CallStep
REDIRECT_FLOW: Machine[CallState, CallStep] = Machine(
    "call flow (redirect mode)",
    {
        _C.NEW: {_S.INVITE: _C.CREATING},
        _C.CREATING: {
            _S.QUEUE: _C.QUEUED,
            _S.CANCEL: _C.ABANDONING,
            _S.REDIRECT: _C.DONE,
            _S.OVERFLOW: _C.DONE,
            _S.REJECT: _C.DONE,
            _S.END_ELSEWHERE: _C.DONE,
            _S.REFUSE: _C.DONE,
        },
        _C.ABANDONING: {_S.ABANDON: _C.DONE},
        _C.QUEUED: {
            _S.REDIRECT: _C.DONE,
            _S.OVERFLOW: _C.DONE,
            _S.REJECT: _C.DONE,
            _S.END_ELSEWHERE: _C.DONE,
            _S.ABANDON: _C.DONE,
        },
        _C.DONE: {},
    },
    initial=_C.NEW,
)

# Proxy mode: the redirect flow (a label that is not a SIP URI is still redirected), plus the
# expert's phone ringing and answering through us.
PROXY_FLOW: Machine[CallState, CallStep] = Machine(
    "call flow (proxy mode)",
    {
        **REDIRECT_FLOW.table,
        _C.CREATING: {**REDIRECT_FLOW.table[_C.CREATING], _S.RING: _C.RINGING},
        _C.QUEUED: {**REDIRECT_FLOW.table[_C.QUEUED], _S.RING: _C.RINGING},
        _C.RINGING: {_S.ANSWER: _C.CONNECTED, _S.REQUEUE: _C.QUEUED, _S.ABANDON: _C.DONE},
        _C.CONNECTED: {_S.HANG_UP: _C.DONE, _S.EXPIRE: _C.DONE},
    },
    initial=_C.NEW,
)
del _C, _S

FLOWS: Mapping[SipMode, Machine[CallState, CallStep]] = {
    "redirect": REDIRECT_FLOW,
    "proxy": PROXY_FLOW,
}
