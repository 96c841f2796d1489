"""The call flow of one incoming INVITE: a state machine with no I/O.

The front feeds ``CallFlow.handle(event)`` with what happened (the task was created, its status
changed, the expert's phone answered, the caller cancelled...) and carries out the returned
commands (answer the caller, create the task, forward the INVITE to the phone...). Timers are
named commands (``CallTimer``), like everything else; the front owns the clock.

Two tables decide. ``HANDLERS[(state, event)]`` says which events a state accepts and which
method weighs them (a fired timer is looked up by its name); anything else raises
``InvalidCallEvent`` and the front logs and drops it (the network repeats and reorders). The
method moves the call only through the mode's ``Machine`` (``REDIRECT_FLOW``, ``PROXY_FLOW``),
whose steps name the decision (``ring``, ``requeue``, ``redirect``...); the diagrams in
docs/sip-states.md are drawn from those tables::

    new --invite--> creating --queue--> queued --(an expert accepted)-->
        redirect mode, or a label that is not a SIP URI: 302 Contact: <label>  -> done
        proxy mode:    INVITE to the label (a "branch")                         -> ringing
    ringing --answer (2xx)--> connected --hang_up (BYE)--> done
    ringing --requeue (busy 486/600: 8; no answer, ring_timeout, failure or a refused host: 19)--> queued
    creating --cancel--> abandoning; queued/ringing --abandon (CANCEL: 487)--> done
    queued --overflow (302 to the fallback label) | reject (480)--> done

Each branch has an id; a response from a branch that is no longer current (cancelled at ring
timeout, or raced with the caller's CANCEL) is stale: a stale 2xx is acknowledged and hung up
at once so no phone stays off-hook, anything else from it is ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from expertline.machine import IllegalTransition
from expertline.routing.records import Disposition
from expertline.runtime.ports import TaskEventType, TaskView
from expertline.settings import SipMode
from expertline.sip.call_states import FLOWS, CallState, CallStep
from expertline.sip.message import Response, SipUri, parse_uri

QUEUED_REFRESH = 60.0  # seconds between 182 Queued refreshes (keeps proxies' Timer C quiet)
# ICM CallDisposition of a call an upstream element gave up on its own timer while the caller
# waited (its CANCEL says so with a Reason): 1 Abandoned in Network, "dropped before being
# terminated at a target device": the network ended it, not the caller (2 and 3 are callers).
UPSTREAM_TIMEOUT = 1


class CallTimer(StrEnum):
    RING = "ring"  # the expert's phone rings at most the queue's ring_timeout
    REFRESH = "refresh"  # 182 Queued again while the caller waits
    MAX_CALL = "max_call"  # a connected call with no BYE seen is ended


# --- events -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Invite:
    pass


@dataclass(frozen=True, slots=True)
class TaskCreated:
    view: TaskView


@dataclass(frozen=True, slots=True)
class CreateFailed:
    status: int  # 404 unknown entry point, 400 bad input, 503 runtime unavailable
    reason: str


@dataclass(frozen=True, slots=True)
class TaskChanged:
    """The result of a wait (``None``: the wait timed out, nothing changed)."""

    view: TaskView | None


@dataclass(frozen=True, slots=True)
class CallerCancel:
    """The caller's INVITE was CANCELled. ``upstream_timeout``: the CANCEL's Reason says an
    upstream element's timer ended the call (``SIP;cause=408``, ``Q.850;cause=102``), not the
    caller; the Reason as received, for the log."""

    upstream_timeout: str | None = None


@dataclass(frozen=True, slots=True)
class BranchResponse:
    branch: int
    response: Response


@dataclass(frozen=True, slots=True)
class BranchFailed:
    """The branch's INVITE transaction timed out (Timer B) or its transport failed."""

    branch: int


@dataclass(frozen=True, slots=True)
class BranchRefused:
    """The front would not call the branch's target: its host is not an allowed SIP target."""

    branch: int
    host: str


@dataclass(frozen=True, slots=True)
class TimerFired:
    name: CallTimer


@dataclass(frozen=True, slots=True)
class Bye:
    from_caller: bool


CallEvent = (
    Invite
    | TaskCreated
    | CreateFailed
    | TaskChanged
    | CallerCancel
    | BranchResponse
    | BranchFailed
    | BranchRefused
    | TimerFired
    | Bye
)

# --- commands ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Respond:
    """Answer the caller's INVITE ourselves (100, 182, 302, 480, 487, 4xx)."""

    status: int
    reason: str | None = None
    contact: str | None = None


@dataclass(frozen=True, slots=True)
class RelayResponse:
    """Pass a response of the current branch on to the caller."""

    response: Response


@dataclass(frozen=True, slots=True)
class CreateTask:
    pass


@dataclass(frozen=True, slots=True)
class WaitTask:
    task_id: str
    seen_status: str


@dataclass(frozen=True, slots=True)
class ReportEvent:
    task_id: str
    type: TaskEventType
    disposition: int | None = None  # with "failed": the TCD's CallDisposition
    handed_off: bool = False  # with "ended": the call left at its label (redirect), talk 0


@dataclass(frozen=True, slots=True)
class ReportDeliveryFailed:
    """Tell the runtime the phone did not answer (19) or was busy (8); the answer is fed back
    as ``TaskChanged`` (the task is requeued, perhaps already assigned again)."""

    task_id: str
    disposition: int


@dataclass(frozen=True, slots=True)
class ForwardInvite:
    branch: int
    target: str


@dataclass(frozen=True, slots=True)
class CancelBranch:
    branch: int


@dataclass(frozen=True, slots=True)
class HangUpBranch:
    """ACK a stale branch's 2xx and send it a BYE."""

    branch: int
    response: Response


@dataclass(frozen=True, slots=True)
class StartCallTimer:
    name: CallTimer
    delay: float


@dataclass(frozen=True, slots=True)
class StopCallTimer:
    name: CallTimer


@dataclass(frozen=True, slots=True)
class Finished:
    """The call is over for the front: stop its timers and waits, forget it."""

    outcome: str


CallCommand = (
    Respond
    | RelayResponse
    | CreateTask
    | WaitTask
    | ReportEvent
    | ReportDeliveryFailed
    | ForwardInvite
    | CancelBranch
    | HangUpBranch
    | StartCallTimer
    | StopCallTimer
    | Finished
)


BUSY_STATUSES = frozenset({486, 600})


class InvalidCallEvent(IllegalTransition):
    """An event the call's state does not accept: the front logs it and drops it."""


@dataclass
class CallFlow:
    """One caller's INVITE from arrival to the end of the call (or of its routing)."""

    mode: SipMode
    ring_timeout: float = 20.0
    max_call: float = 4 * 3600.0
    refresh: float = QUEUED_REFRESH  # seconds between 182 Queued while the caller waits
    state: CallState = CallState.NEW
    task_id: str | None = None
    branches: int = 0  # branches created so far (ids 1, 2, ...)
    branch: int | None = None  # the branch now ringing, if any
    # The 182 refresh keeps its schedule while a phone rings (the caller hears the phone's
    # 180 then, so no 182 goes out): one that came due meanwhile is sent at the requeue.
    refresh_armed: bool = False
    refresh_due: bool = False
    label: str | None = None
    outcome: str | None = None
    log: list[str] = field(default_factory=list)  # decisions, for logs and tests

    def handle(self, event: CallEvent) -> list[CallCommand]:
        key = event_key(event)
        handler = HANDLERS.get((self.state, key))
        if handler is None:
            name = key if isinstance(key, CallTimer) else key.__name__
            raise InvalidCallEvent("call flow", self.state, name)
        return handler(self, event)

    def _go(self, step: CallStep) -> None:
        self.state = FLOWS[self.mode].fire(self.state, step)

    def _decide(self, sentence: str) -> None:
        self.log.append(sentence)

    def _finish(
        self, step: CallStep, outcome: str, commands: list[CallCommand]
    ) -> list[CallCommand]:
        self._go(step)
        self.outcome = outcome
        commands.append(Finished(outcome))
        return commands

    # --- arrival and task creation ------------------------------------------------------------

    def _start(self, _: Invite) -> list[CallCommand]:
        self._go(CallStep.INVITE)
        return [Respond(100), CreateTask()]

    def _task_created(self, event: TaskCreated) -> list[CallCommand]:
        self.task_id = event.view.id
        return self._on_task(event.view, first=True)

    def _create_failed(self, event: CreateFailed) -> list[CallCommand]:
        self._decide(f"no task: {event.reason}")
        return self._finish(
            CallStep.REFUSE, f"refused-{event.status}", [Respond(event.status, event.reason)]
        )

    def _cancel_while_creating(self, _: CallerCancel) -> list[CallCommand]:
        self._decide("caller cancelled before the task existed; abandoning it once created")
        self._go(CallStep.CANCEL)
        return [Respond(487)]

    def _abandon_created(self, event: TaskCreated) -> list[CallCommand]:
        self.task_id = event.view.id
        return self._finish(
            CallStep.ABANDON, "abandoned", [ReportEvent(event.view.id, "abandoned")]
        )

    def _forget(self, _: CallEvent) -> list[CallCommand]:
        return self._finish(CallStep.ABANDON, "abandoned", [])

    def _ignore(self, _: CallEvent) -> list[CallCommand]:
        return []

    # --- waiting for an expert ----------------------------------------------------------------

    def _task_changed(self, event: TaskChanged) -> list[CallCommand]:
        assert self.task_id is not None
        if event.view is None:
            return [WaitTask(self.task_id, "queued")]
        return self._on_task(event.view, first=False)

    def _on_task(self, view: TaskView, first: bool) -> list[CallCommand]:
        status = view.status
        commands: list[CallCommand] = []
        if status in ("queued", "offered", "connected"):
            if first:
                commands += [Respond(182), self._arm_refresh()]
                self._go(CallStep.QUEUE)
            return [*commands, WaitTask(view.id, status)]
        if not first and not (status == "assigned" and self.mode == "proxy"):
            commands.append(StopCallTimer(CallTimer.REFRESH))  # ringing keeps the schedule
        if status == "assigned" and view.label:
            return commands + self._deliver(view)
        if status == "overflowed" and view.label:
            self._decide(f"max wait reached; redirecting to the fallback label {view.label}")
            return self._finish(
                CallStep.OVERFLOW, "overflowed", [*commands, Respond(302, contact=view.label)]
            )
        if status == "rejected":
            self._decide("no expert before max wait and no fallback label; 480")
            return self._finish(CallStep.REJECT, "rejected", [*commands, Respond(480)])
        self._decide(f"task ended elsewhere with status {status}; 480")
        return self._finish(CallStep.END_ELSEWHERE, f"task-{status}", [*commands, Respond(480)])

    def _deliver(self, view: TaskView) -> list[CallCommand]:
        assert view.label is not None
        self.label = view.label
        uri = sip_target(view.label)
        if self.mode == "redirect" or uri is None:
            why = "redirect mode" if self.mode == "redirect" else "label is not a SIP URI"
            self._decide(f"expert {view.expert} accepted; 302 to {view.label} ({why})")
            return self._finish(
                CallStep.REDIRECT,
                "redirected",
                [Respond(302, contact=view.label), ReportEvent(view.id, "ended", handed_off=True)],
            )
        self.branches += 1
        self.branch = self.branches
        self._go(CallStep.RING)
        self._decide(f"expert {view.expert} accepted; calling {view.label} (branch {self.branch})")
        return [
            ForwardInvite(self.branch, str(uri)),
            StartCallTimer(CallTimer.RING, self.ring_timeout),
        ]

    def _arm_refresh(self) -> StartCallTimer:
        self.refresh_armed, self.refresh_due = True, False
        return StartCallTimer(CallTimer.REFRESH, self.refresh)

    def _refresh(self, _: TimerFired) -> list[CallCommand]:
        return [Respond(182), self._arm_refresh()]

    def _refresh_while_ringing(self, _: TimerFired) -> list[CallCommand]:
        self.refresh_armed, self.refresh_due = False, True
        return []

    def _cancel_queued(self, event: CallerCancel) -> list[CallCommand]:
        assert self.task_id is not None
        commands: list[CallCommand] = [StopCallTimer(CallTimer.REFRESH), Respond(487)]
        if event.upstream_timeout is not None:
            return self._upstream_gave_up("queued", event.upstream_timeout, commands)
        self._decide("caller cancelled while queued; task abandoned")
        commands.append(ReportEvent(self.task_id, "abandoned"))
        return self._finish(CallStep.ABANDON, "abandoned", commands)

    def _upstream_gave_up(
        self, where: str, reason: str, commands: list[CallCommand]
    ) -> list[CallCommand]:
        """An upstream timer ended the call (not the caller): the task fails with its own
        disposition, so the records do not count a caller who abandoned."""
        assert self.task_id is not None
        self._decide(
            f"an upstream timer cancelled the call while {where} (Reason: {reason});"
            f" task ended with disposition {UPSTREAM_TIMEOUT}"
        )
        commands.append(ReportEvent(self.task_id, "failed", disposition=UPSTREAM_TIMEOUT))
        return self._finish(CallStep.ABANDON, "upstream-timeout", commands)

    # --- the expert's phone rings (proxy mode) ------------------------------------------------

    def _branch_response(self, event: BranchResponse) -> list[CallCommand]:
        if event.branch != self.branch:
            return self._stale_branch(event)
        assert self.task_id is not None
        status = event.response.status
        if status == 100:
            return []
        if status < 200:
            return [RelayResponse(event.response)]
        if status < 300:
            self._decide(f"phone answered (branch {self.branch}); connected")
            self._go(CallStep.ANSWER)
            return [
                StopCallTimer(CallTimer.RING),
                StopCallTimer(CallTimer.REFRESH),
                RelayResponse(event.response),
                ReportEvent(self.task_id, "connected"),
                StartCallTimer(CallTimer.MAX_CALL, self.max_call),
            ]
        disposition = Disposition.BUSY if status in BUSY_STATUSES else Disposition.RING_NO_ANSWER
        self._decide(
            f"phone answered {status} (branch {self.branch}); requeue ({int(disposition)})"
        )
        return self._requeue(disposition, cancel=False)

    def _branch_failed(self, event: BranchFailed) -> list[CallCommand]:
        if event.branch != self.branch:
            return []
        self._decide(f"no response from the phone (branch {self.branch}); requeue (19)")
        return self._requeue(Disposition.RING_NO_ANSWER, cancel=False)

    def _branch_refused(self, event: BranchRefused) -> list[CallCommand]:
        if event.branch != self.branch:
            return []
        self._decide(
            f"the phone's host {event.host} is not an allowed SIP target (branch {self.branch});"
            " not called, requeue (19)"
        )
        return self._requeue(Disposition.RING_NO_ANSWER, cancel=False)

    def _ring_timer(self, _: TimerFired) -> list[CallCommand]:
        self._decide(
            f"phone rang past ring_timeout={self.ring_timeout:g}s; cancel and requeue (19)"
        )
        return self._requeue(Disposition.RING_NO_ANSWER, cancel=True)

    def _requeue(self, disposition: int, cancel: bool) -> list[CallCommand]:
        assert self.task_id is not None and self.branch is not None
        commands: list[CallCommand] = [StopCallTimer(CallTimer.RING)]
        if cancel:
            commands.append(CancelBranch(self.branch))
        self.branch = None  # any later response from it is stale
        self._go(CallStep.REQUEUE)
        commands.append(ReportDeliveryFailed(self.task_id, disposition))
        if self.refresh_due or not self.refresh_armed:
            # Queued again with a 182 overdue (the phone rang past the refresh interval), or
            # none sent yet (assigned at once): now. Else the pending refresh keeps its time.
            commands += [Respond(182), self._arm_refresh()]
        return commands

    def _cancel_ringing(self, event: CallerCancel) -> list[CallCommand]:
        assert self.task_id is not None and self.branch is not None
        stale, self.branch = self.branch, None
        commands: list[CallCommand] = [
            StopCallTimer(CallTimer.RING),
            CancelBranch(stale),
            Respond(487),
        ]
        if event.upstream_timeout is not None:
            return self._upstream_gave_up("the phone rang", event.upstream_timeout, commands)
        self._decide("caller cancelled while the phone rang; cancel the branch, task abandoned")
        commands.append(ReportEvent(self.task_id, "abandoned"))
        return self._finish(CallStep.ABANDON, "abandoned", commands)

    def _stale_branch(self, event: BranchResponse) -> list[CallCommand]:
        if 200 <= event.response.status < 300:
            self._decide(f"stale branch {event.branch} answered; hanging it up")
            return [HangUpBranch(event.branch, event.response)]
        return []

    # --- connected ------------------------------------------------------------------------

    def _connected_response(self, event: BranchResponse) -> list[CallCommand]:
        if event.branch == self.branch and 200 <= event.response.status < 300:
            return [RelayResponse(event.response)]  # 2xx retransmission until the caller's ACK
        return self._stale_branch(event)

    def _bye(self, event: Bye) -> list[CallCommand]:
        assert self.task_id is not None
        who = "caller" if event.from_caller else "expert"
        self._decide(f"{who} hung up; task completed")
        return self._finish(
            CallStep.HANG_UP,
            "completed",
            [StopCallTimer(CallTimer.MAX_CALL), ReportEvent(self.task_id, "ended")],
        )

    def _max_call(self, _: TimerFired) -> list[CallCommand]:
        assert self.task_id is not None
        self._decide(f"no BYE seen within max_call={self.max_call:g}s; ending the task")
        return self._finish(CallStep.EXPIRE, "max-call", [ReportEvent(self.task_id, "ended")])


EventKey = type | CallTimer


def event_key(event: CallEvent) -> EventKey:
    """What ``HANDLERS`` is keyed by: the event's type; a fired timer, by its name."""
    return event.name if isinstance(event, TimerFired) else type(event)


Handler = Callable[[CallFlow, Any], list[CallCommand]]

_C, _F = CallState, CallFlow
# Which events each state accepts, and the method that weighs them (``HANDLERS``: the same,
# flat). Anything else is ignored with a log line by the front (``InvalidCallEvent``): the
# network repeats and reorders.
ACCEPTED: Mapping[CallState, Mapping[EventKey, Handler]] = {
    _C.NEW: {Invite: _F._start},
    _C.CREATING: {
        TaskCreated: _F._task_created,
        CreateFailed: _F._create_failed,
        CallerCancel: _F._cancel_while_creating,
    },
    _C.ABANDONING: {TaskCreated: _F._abandon_created, CreateFailed: _F._forget},
    _C.QUEUED: {
        TaskChanged: _F._task_changed,
        CallerCancel: _F._cancel_queued,
        CallTimer.REFRESH: _F._refresh,
        BranchResponse: _F._stale_branch,
        **dict.fromkeys((BranchFailed, BranchRefused, Bye), _F._ignore),
    },
    _C.RINGING: {
        BranchResponse: _F._branch_response,
        BranchFailed: _F._branch_failed,
        BranchRefused: _F._branch_refused,
        CallTimer.RING: _F._ring_timer,
        CallTimer.REFRESH: _F._refresh_while_ringing,
        CallerCancel: _F._cancel_ringing,
        TaskChanged: _F._ignore,
    },
    _C.CONNECTED: {
        Bye: _F._bye,
        BranchResponse: _F._connected_response,
        CallTimer.MAX_CALL: _F._max_call,
        TaskChanged: _F._ignore,
    },
    _C.DONE: {
        BranchResponse: _F._stale_branch,
        # Late news of a call that is over: a wait, a leg or a timer that was under way.
        **dict.fromkeys((TaskChanged, TaskCreated, CreateFailed, CallerCancel, Bye), _F._ignore),
        **dict.fromkeys((BranchFailed, BranchRefused, *CallTimer), _F._ignore),
    },
}
HANDLERS: Mapping[tuple[CallState, EventKey], Handler] = {
    (state, key): handler for state, row in ACCEPTED.items() for key, handler in row.items()
}
del _C, _F


def sip_target(label: str) -> SipUri | None:
    """The SIP URI to call for a label, or None when the label is not one (e.g. ``tel:``)."""
    try:
        uri = parse_uri(label)
    except ValueError:
        return None
    return uri if uri.is_sip and uri.host else None
