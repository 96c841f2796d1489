"""The call flow state machine: decisions for each SIP/task event, no I/O."""

from __future__ import annotations

import pytest

from expertline.runtime.ports import TaskView
from expertline.sip import call_states, calls
from expertline.sip.calls import (
    BranchFailed,
    BranchRefused,
    BranchResponse,
    Bye,
    CallerCancel,
    CallFlow,
    CancelBranch,
    CreateFailed,
    CreateTask,
    Finished,
    ForwardInvite,
    HangUpBranch,
    Invite,
    RelayResponse,
    ReportDeliveryFailed,
    ReportEvent,
    Respond,
    StartCallTimer,
    TaskChanged,
    TaskCreated,
    TimerFired,
    WaitTask,
)
from expertline.sip.message import Headers, Response

PHONE = "sip:1001@127.0.0.1:5071"


def view(status: str, label: str | None = None, expert: str | None = None) -> TaskView:
    return TaskView("t1", "1234", status, "billing", expert, label, "2026-01-01T00:00:00Z")


def resp(status: int) -> Response:
    return Response(Headers(), b"", status, "x")


def started(mode: str) -> CallFlow:
    flow = CallFlow(mode=mode, ring_timeout=20.0)  # type: ignore[arg-type]
    assert flow.handle(Invite()) == [Respond(100), CreateTask()]
    commands = flow.handle(TaskCreated(view("queued")))
    assert commands == [
        Respond(182),
        StartCallTimer("refresh", calls.QUEUED_REFRESH),
        WaitTask("t1", "queued"),
    ]
    return flow


def test_redirect_answers_302_with_the_label_and_ends_the_task() -> None:
    flow = started("redirect")
    assert flow.handle(TaskChanged(None)) == [WaitTask("t1", "queued")]  # wait slice elapsed
    commands = flow.handle(TaskChanged(view("assigned", PHONE, "alice")))
    assert Respond(302, contact=PHONE) in commands
    assert ReportEvent("t1", "ended", handed_off=True) in commands
    assert commands[-1] == Finished("redirected") and flow.state == "done"


def test_already_assigned_at_creation_is_redirected_at_once() -> None:
    flow = CallFlow(mode="redirect")
    flow.handle(Invite())
    commands = flow.handle(TaskCreated(view("assigned", PHONE, "bob")))
    assert commands[0] == Respond(302, contact=PHONE)


def test_a_refused_target_is_a_failed_delivery_and_the_task_is_requeued() -> None:
    flow = started("proxy")
    evil = "sip:1@evil.test"
    assert ForwardInvite(1, evil) in flow.handle(TaskChanged(view("assigned", evil, "alice")))
    commands = flow.handle(BranchRefused(1, "evil.test"))
    assert ReportDeliveryFailed("t1", 19) in commands
    assert not any(isinstance(c, CancelBranch | Respond) for c in commands)  # nothing was sent
    assert flow.state == "queued" and flow.branch is None
    assert "evil.test is not an allowed SIP target" in flow.log[-1]
    assert flow.handle(BranchRefused(1, "evil.test")) == []  # stale: ignored


def test_overflow_to_fallback_label_and_reject() -> None:
    flow = started("redirect")
    commands = flow.handle(TaskChanged(view("overflowed", "sip:agents@cc.example.test")))
    assert Respond(302, contact="sip:agents@cc.example.test") in commands
    assert flow.outcome == "overflowed"
    flow = started("proxy")
    assert Respond(480) in flow.handle(TaskChanged(view("rejected")))
    assert flow.outcome == "rejected"


def test_unknown_entry_point_is_404() -> None:
    flow = CallFlow(mode="redirect")
    flow.handle(Invite())
    commands = flow.handle(CreateFailed(404, "Not Found"))
    assert commands == [Respond(404, "Not Found"), Finished("refused-404")]


def test_caller_cancel_while_queued_abandons() -> None:
    flow = started("redirect")
    commands = flow.handle(CallerCancel())
    assert Respond(487) in commands and ReportEvent("t1", "abandoned") in commands
    # A late task change is ignored.
    assert flow.handle(TaskChanged(view("assigned", PHONE))) == []


def test_caller_cancel_before_the_task_exists() -> None:
    flow = CallFlow(mode="redirect")
    flow.handle(Invite())
    assert flow.handle(CallerCancel()) == [Respond(487)]
    commands = flow.handle(TaskCreated(view("queued")))
    assert commands == [ReportEvent("t1", "abandoned"), Finished("abandoned")]


def test_proxy_answer_then_bye_completes() -> None:
    flow = started("proxy")
    commands = flow.handle(TaskChanged(view("assigned", PHONE, "alice")))
    assert ForwardInvite(1, PHONE) in commands and StartCallTimer("ring", 20.0) in commands
    ringing = resp(180)
    assert flow.handle(BranchResponse(1, resp(100))) == []
    assert flow.handle(BranchResponse(1, ringing)) == [RelayResponse(ringing)]
    ok = resp(200)
    commands = flow.handle(BranchResponse(1, ok))
    assert RelayResponse(ok) in commands and ReportEvent("t1", "connected") in commands
    assert flow.handle(BranchResponse(1, ok)) == [RelayResponse(ok)]  # 2xx retransmission
    commands = flow.handle(Bye(from_caller=False))
    assert ReportEvent("t1", "ended") in commands and flow.outcome == "completed"


def test_ring_timeout_cancels_the_branch_and_requeues_19() -> None:
    flow = started("proxy")
    flow.handle(TaskChanged(view("assigned", PHONE, "alice")))
    commands = flow.handle(TimerFired("ring"))
    assert CancelBranch(1) in commands and ReportDeliveryFailed("t1", 19) in commands
    assert not any(isinstance(c, Respond) for c in commands)  # the caller keeps ringing
    # The runtime answers with the requeued task, then a new expert accepts.
    assert flow.handle(TaskChanged(view("queued"))) == [WaitTask("t1", "queued")]
    commands = flow.handle(TaskChanged(view("assigned", "sip:1002@127.0.0.1:5072", "bob")))
    assert ForwardInvite(2, "sip:1002@127.0.0.1:5072") in commands
    # The old branch answers late: it is hung up, the call goes on with branch 2.
    late = resp(200)
    assert flow.handle(BranchResponse(1, late)) == [HangUpBranch(1, late)]
    assert flow.state == "ringing" and flow.branch == 2


def test_busy_requeues_8_and_other_failures_19() -> None:
    flow = started("proxy")
    flow.handle(TaskChanged(view("assigned", PHONE, "alice")))
    commands = flow.handle(BranchResponse(1, resp(486)))
    assert ReportDeliveryFailed("t1", 8) in commands and CancelBranch(1) not in commands
    flow.handle(TaskChanged(view("assigned", PHONE, "alice")))
    assert ReportDeliveryFailed("t1", 19) in flow.handle(BranchFailed(2))


@pytest.mark.parametrize(
    ("status", "disposition"),
    [(302, 19), (404, 19), (482, 19), (500, 19), (503, 19), (600, 8), (603, 19)],
)
def test_any_final_failure_from_the_phone_is_a_failed_delivery_at_once(
    status: int, disposition: int
) -> None:
    """404 or 482 at once (a phone that fails) is reported on that response, not at the ring
    timeout: the core decides whom to call next and when."""
    flow = started("proxy")
    flow.handle(TaskChanged(view("assigned", PHONE, "alice")))
    commands = flow.handle(BranchResponse(1, resp(status)))
    assert ReportDeliveryFailed("t1", disposition) in commands
    assert calls.StopCallTimer(calls.CallTimer.RING) in commands
    assert not any(isinstance(c, RelayResponse) for c in commands)  # the caller hears nothing


def test_caller_cancel_while_ringing_cancels_the_branch() -> None:
    flow = started("proxy")
    flow.handle(TaskChanged(view("assigned", PHONE, "alice")))
    commands = flow.handle(CallerCancel())
    assert CancelBranch(1) in commands and Respond(487) in commands
    assert ReportEvent("t1", "abandoned") in commands
    late = resp(200)
    assert flow.handle(BranchResponse(1, late)) == [HangUpBranch(1, late)]


@pytest.mark.parametrize("ringing", [False, True])
def test_an_upstream_timer_cancel_fails_the_task_with_its_own_disposition(ringing: bool) -> None:
    flow = started("proxy")
    if ringing:
        flow.handle(TaskChanged(view("assigned", PHONE, "alice")))
    commands = flow.handle(CallerCancel(upstream_timeout="SIP;cause=408"))
    assert Respond(487) in commands
    assert ReportEvent("t1", "failed", disposition=calls.UPSTREAM_TIMEOUT) in commands
    assert not any(isinstance(c, ReportEvent) and c.type == "abandoned" for c in commands)
    assert (CancelBranch(1) in commands) is ringing
    assert flow.outcome == "upstream-timeout"


def test_proxy_with_a_non_sip_label_falls_back_to_redirect() -> None:
    flow = started("proxy")
    commands = flow.handle(TaskChanged(view("assigned", "+15551234567", "alice")))
    assert Respond(302, contact="+15551234567") in commands


def test_every_table_row_has_a_handler() -> None:
    for (state, _), handler in calls.HANDLERS.items():
        assert state in call_states.STATES
        assert getattr(CallFlow, handler.__name__) is handler


def test_redirect_mode_has_no_ringing_and_an_unaccepted_event_is_refused() -> None:
    from expertline.machine import IllegalTransition
    from expertline.sip.call_states import PROXY_FLOW, REDIRECT_FLOW, CallState, CallStep

    assert not REDIRECT_FLOW.allows(CallState.QUEUED, CallStep.RING)
    assert PROXY_FLOW.allows(CallState.QUEUED, CallStep.RING)
    assert CallState.RINGING not in REDIRECT_FLOW.states
    assert REDIRECT_FLOW.final == PROXY_FLOW.final == {CallState.DONE}
    flow = started("redirect")
    # InvalidCallEvent is the kit's IllegalTransition: the front logs it and drops the event.
    with pytest.raises(IllegalTransition, match="call flow: no transition from 'queued'"):
        flow.handle(Invite())
    assert flow.state == "queued"


def test_a_timer_is_dispatched_by_its_name() -> None:
    flow = started("proxy")
    assert flow.handle(TimerFired(calls.CallTimer.REFRESH)) == [
        Respond(182),
        StartCallTimer(calls.CallTimer.REFRESH, calls.QUEUED_REFRESH),
    ]
    with_ring = flow.handle(TaskChanged(view("assigned", PHONE, "alice")))
    assert StartCallTimer(calls.CallTimer.RING, 20.0) in with_ring
    assert flow.state == "ringing"
    assert CancelBranch(1) in flow.handle(TimerFired(calls.CallTimer.RING))
    assert flow.state == "queued"


def test_the_refresh_keeps_its_schedule_while_the_phone_rings() -> None:
    """A refresh due while the phone rang goes out at the requeue; one not due yet keeps its
    time; a caller assigned at once (no 182 yet) hears one at the requeue."""
    refresh = StartCallTimer(calls.CallTimer.REFRESH, calls.QUEUED_REFRESH)
    flow = started("proxy")
    ringing = flow.handle(TaskChanged(view("assigned", PHONE, "alice")))
    assert calls.StopCallTimer(calls.CallTimer.REFRESH) not in ringing
    assert flow.handle(TimerFired(calls.CallTimer.REFRESH)) == []  # the phone's 180 plays
    commands = flow.handle(TimerFired(calls.CallTimer.RING))
    assert commands[-2:] == [Respond(182), refresh]

    flow = started("proxy")
    flow.handle(TaskChanged(view("assigned", PHONE, "alice")))
    commands = flow.handle(BranchResponse(1, resp(404)))
    assert not any(isinstance(c, Respond | StartCallTimer) for c in commands)  # still pending

    flow = CallFlow(mode="proxy")
    flow.handle(Invite())
    flow.handle(TaskCreated(view("assigned", PHONE, "dave")))
    commands = flow.handle(BranchResponse(1, resp(486)))
    assert commands[-2:] == [Respond(182), refresh]
