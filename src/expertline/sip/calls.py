"""The call flow of one incoming INVITE: a state machine with no I/O.

The front feeds ``CallFlow.handle(event)`` with what happened (the task was created, its status
changed, the expert's phone answered, the caller cancelled...) and carries out the returned
commands (answer the caller, create the task, forward the INVITE to the phone...). Timers are
named commands, like everything else; the front owns the clock.

States (``STATES``)::

    new --Invite--> creating --TaskCreated(queued)--> queued --TaskChanged(assigned)-->
        redirect mode: 302 Contact: <label>                          -> done
        proxy mode:    INVITE to the label (a "branch")              -> ringing
    ringing --2xx--> connected --Bye--> done
    ringing --486/600 (busy: 8) | no answer, ring_timeout or failure (19)--> queued (requeued)
    ringing --BranchRefused (the phone's host is not an allowed target: 19)--> queued
    creating/queued/ringing --CallerCancel--> done (487, task abandoned)
    queued --TaskChanged(overflowed)--> done (302 to the fallback label)
    queued --TaskChanged(rejected)--> done (480)

Each branch has an id; a response from a branch that is no longer current (cancelled at ring
timeout, or raced with the caller's CANCEL) is stale: a stale 2xx is acknowledged and hung up
at once so no phone stays off-hook, anything else from it is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from expertline.runtime.ports import TaskEventType, TaskView
from expertline.settings import SipMode
from expertline.sip.message import Response, SipUri, parse_uri

QUEUED_REFRESH = 60.0  # seconds between 182 Queued refreshes (keeps proxies' Timer C quiet)

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
    pass


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
    name: Literal["ring", "refresh", "max_call"]


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
    name: Literal["ring", "refresh", "max_call"]
    delay: float


@dataclass(frozen=True, slots=True)
class StopCallTimer:
    name: Literal["ring", "refresh", "max_call"]


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

State = Literal["new", "creating", "abandoning", "queued", "ringing", "connected", "done"]
STATES: tuple[State, ...] = (
    "new",
    "creating",
    "abandoning",
    "queued",
    "ringing",
    "connected",
    "done",
)

# Which events each state accepts, and the handler that decides. Anything else is ignored
# with a log line by the front (``InvalidCallEvent``): the network repeats and reorders.
TABLE: dict[tuple[State, type], str] = {
    ("new", Invite): "start",
    ("creating", TaskCreated): "task_created",
    ("creating", CreateFailed): "create_failed",
    ("creating", CallerCancel): "cancel_while_creating",
    ("abandoning", TaskCreated): "abandon_created",
    ("abandoning", CreateFailed): "forget",
    ("queued", TaskChanged): "task_changed",
    ("queued", CallerCancel): "cancel_queued",
    ("queued", TimerFired): "refresh",
    ("queued", BranchResponse): "stale_branch",
    ("ringing", BranchResponse): "branch_response",
    ("ringing", BranchFailed): "branch_failed",
    ("ringing", BranchRefused): "branch_refused",
    ("ringing", TimerFired): "ring_timer",
    ("ringing", CallerCancel): "cancel_ringing",
    ("ringing", TaskChanged): "ignore",
    ("connected", Bye): "bye",
    ("connected", BranchResponse): "connected_response",
    ("connected", TimerFired): "max_call",
    ("connected", TaskChanged): "ignore",
    ("done", BranchResponse): "stale_branch",
    ("done", TaskChanged): "ignore",
    ("done", TaskCreated): "ignore",
    ("done", CreateFailed): "ignore",
    ("done", TimerFired): "ignore",
    ("done", BranchFailed): "ignore",
    ("done", BranchRefused): "ignore",
    ("done", CallerCancel): "ignore",
    ("done", Bye): "ignore",
    ("queued", BranchFailed): "ignore",
    ("queued", BranchRefused): "ignore",
    ("queued", Bye): "ignore",
}

BUSY_STATUSES = frozenset({486, 600})


class InvalidCallEvent(Exception):
    pass


@dataclass
class CallFlow:
    """One caller's INVITE from arrival to the end of the call (or of its routing)."""

    mode: SipMode
    ring_timeout: float = 20.0
    max_call: float = 4 * 3600.0
    state: State = "new"
    task_id: str | None = None
    branches: int = 0  # branches created so far (ids 1, 2, ...)
    branch: int | None = None  # the branch now ringing, if any
    label: str | None = None
    outcome: str | None = None
    log: list[str] = field(default_factory=list)  # decisions, for logs and tests

    def handle(self, event: CallEvent) -> list[CallCommand]:
        handler = TABLE.get((self.state, type(event)))
        if handler is None:
            raise InvalidCallEvent(f"{type(event).__name__} in state {self.state}")
        commands: list[CallCommand] = getattr(self, f"_{handler}")(event)
        return commands

    def _decide(self, sentence: str) -> None:
        self.log.append(sentence)

    def _finish(self, outcome: str, commands: list[CallCommand]) -> list[CallCommand]:
        self.state = "done"
        self.outcome = outcome
        commands.append(Finished(outcome))
        return commands

    # --- arrival and task creation ------------------------------------------------------------

    def _start(self, _: Invite) -> list[CallCommand]:
        self.state = "creating"
        return [Respond(100), CreateTask()]

    def _task_created(self, event: TaskCreated) -> list[CallCommand]:
        self.task_id = event.view.id
        return self._on_task(event.view, first=True)

    def _create_failed(self, event: CreateFailed) -> list[CallCommand]:
        self._decide(f"no task: {event.reason}")
        return self._finish(f"refused-{event.status}", [Respond(event.status, event.reason)])

    def _cancel_while_creating(self, _: CallerCancel) -> list[CallCommand]:
        self._decide("caller cancelled before the task existed; abandoning it once created")
        self.state = "abandoning"
        return [Respond(487)]

    def _abandon_created(self, event: TaskCreated) -> list[CallCommand]:
        self.task_id = event.view.id
        return self._finish("abandoned", [ReportEvent(event.view.id, "abandoned")])

    def _forget(self, _: CallEvent) -> list[CallCommand]:
        return self._finish("abandoned", [])

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
                commands += [Respond(182), StartCallTimer("refresh", QUEUED_REFRESH)]
            self.state = "queued"
            return [*commands, WaitTask(view.id, status)]
        if not first:
            commands.append(StopCallTimer("refresh"))
        if status == "assigned" and view.label:
            return commands + self._deliver(view)
        if status == "overflowed" and view.label:
            self._decide(f"max wait reached; redirecting to the fallback label {view.label}")
            return self._finish("overflowed", [*commands, Respond(302, contact=view.label)])
        if status == "rejected":
            self._decide("no expert before max wait and no fallback label; 480")
            return self._finish("rejected", [*commands, Respond(480)])
        self._decide(f"task ended elsewhere with status {status}; 480")
        return self._finish(f"task-{status}", [*commands, Respond(480)])

    def _deliver(self, view: TaskView) -> list[CallCommand]:
        assert view.label is not None
        self.label = view.label
        uri = sip_target(view.label)
        if self.mode == "redirect" or uri is None:
            why = "redirect mode" if self.mode == "redirect" else "label is not a SIP URI"
            self._decide(f"expert {view.expert} accepted; 302 to {view.label} ({why})")
            return self._finish(
                "redirected",
                [Respond(302, contact=view.label), ReportEvent(view.id, "ended")],
            )
        self.branches += 1
        self.branch = self.branches
        self.state = "ringing"
        self._decide(f"expert {view.expert} accepted; calling {view.label} (branch {self.branch})")
        return [ForwardInvite(self.branch, str(uri)), StartCallTimer("ring", self.ring_timeout)]

    def _refresh(self, event: TimerFired) -> list[CallCommand]:
        if event.name != "refresh":
            return []
        return [Respond(182), StartCallTimer("refresh", QUEUED_REFRESH)]

    def _cancel_queued(self, _: CallerCancel) -> list[CallCommand]:
        assert self.task_id is not None
        self._decide("caller cancelled while queued; task abandoned")
        return self._finish(
            "abandoned",
            [StopCallTimer("refresh"), Respond(487), ReportEvent(self.task_id, "abandoned")],
        )

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
            self.state = "connected"
            return [
                StopCallTimer("ring"),
                RelayResponse(event.response),
                ReportEvent(self.task_id, "connected"),
                StartCallTimer("max_call", self.max_call),
            ]
        disposition = 8 if status in BUSY_STATUSES else 19
        self._decide(f"phone answered {status} (branch {self.branch}); requeue ({disposition})")
        return self._requeue(disposition, cancel=False)

    def _branch_failed(self, event: BranchFailed) -> list[CallCommand]:
        if event.branch != self.branch:
            return []
        self._decide(f"no response from the phone (branch {self.branch}); requeue (19)")
        return self._requeue(19, cancel=False)

    def _branch_refused(self, event: BranchRefused) -> list[CallCommand]:
        if event.branch != self.branch:
            return []
        self._decide(
            f"the phone's host {event.host} is not an allowed SIP target (branch {self.branch});"
            " not called, requeue (19)"
        )
        return self._requeue(19, cancel=False)

    def _ring_timer(self, event: TimerFired) -> list[CallCommand]:
        if event.name != "ring":
            return []
        self._decide(
            f"phone rang past ring_timeout={self.ring_timeout:g}s; cancel and requeue (19)"
        )
        return self._requeue(19, cancel=True)

    def _requeue(self, disposition: int, cancel: bool) -> list[CallCommand]:
        assert self.task_id is not None and self.branch is not None
        commands: list[CallCommand] = [StopCallTimer("ring")]
        if cancel:
            commands.append(CancelBranch(self.branch))
        self.branch = None  # any later response from it is stale
        self.state = "queued"
        return [
            *commands,
            ReportDeliveryFailed(self.task_id, disposition),
            StartCallTimer("refresh", QUEUED_REFRESH),
        ]

    def _cancel_ringing(self, _: CallerCancel) -> list[CallCommand]:
        assert self.task_id is not None and self.branch is not None
        self._decide("caller cancelled while the phone rang; cancel the branch, task abandoned")
        stale, self.branch = self.branch, None
        return self._finish(
            "abandoned",
            [
                StopCallTimer("ring"),
                CancelBranch(stale),
                Respond(487),
                ReportEvent(self.task_id, "abandoned"),
            ],
        )

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
            "completed", [StopCallTimer("max_call"), ReportEvent(self.task_id, "ended")]
        )

    def _max_call(self, event: TimerFired) -> list[CallCommand]:
        if event.name != "max_call":
            return []
        assert self.task_id is not None
        self._decide(f"no BYE seen within max_call={self.max_call:g}s; ending the task")
        return self._finish("max-call", [ReportEvent(self.task_id, "ended")])


def sip_target(label: str) -> SipUri | None:
    """The SIP URI to call for a label, or None when the label is not one (e.g. ``tel:``)."""
    try:
        uri = parse_uri(label)
    except ValueError:
        return None
    return uri if uri.is_sip and uri.host else None
