"""``decide(observation, now)``: every branch of the keeper's decisions, with no I/O and no
clock but the ``now`` given."""

from __future__ import annotations

import logging

import pytest

from expertline.ha.decide import (
    LAPSE_SLACK,
    Action,
    Answer,
    LeaseTimes,
    Observation,
    Reply,
    Runtime,
    Step,
    Why,
    decide,
)

T = LeaseTimes()  # ttl 2, renew 0.5, retry_timeout 0.5, poll 0.5, margin 0.5
HOLDER_B = "b/42/0f0f0f0f"


def standby(**kw: object) -> Observation:
    return Observation(times=T, **kw)  # type: ignore[arg-type]


def holding(
    runtime: Runtime = Runtime.RUNNING, renewed_at: float = 100.0, **kw: object
) -> Observation:
    return Observation(times=T, token=7, renewed_at=renewed_at, runtime=runtime, **kw)  # type: ignore[arg-type]


# --- the rule ----------------------------------------------------------------------------


def test_the_default_times_meet_the_rule_with_nothing_to_spare() -> None:
    assert T.problems() == []
    assert T.renew + 2 * T.retry_timeout + T.margin == T.ttl


@pytest.mark.parametrize(
    ("times", "message"),
    [
        (LeaseTimes(ttl=1.5), "the lease time 1.5 s is too short: renew (0.5 s) + 2 x retry_timeout (0.5 s) + the 0.5 s step-down margin = 2 s must not exceed it"),
        (LeaseTimes(ttl=10, renew=5, retry_timeout=3), "= 11.5 s must not exceed it"),
        (LeaseTimes(poll=0), "poll must be more than 0 s (got 0)"),
    ],
)  # fmt: skip
def test_times_that_break_the_rule_are_refused(times: LeaseTimes, message: str) -> None:
    (problem,) = times.problems()
    assert message in problem


# --- standby -----------------------------------------------------------------------------


def test_a_new_standby_tries_the_lease_at_once() -> None:
    action, sentence = decide(standby(), 5.0)
    assert action == Action(Step.ACQUIRE, Why.POLL)
    assert sentence == "standby: trying the lease"


def test_a_standby_waits_for_the_holders_grant_to_end_but_no_longer_than_a_poll() -> None:
    held = Reply(Answer.HELD, at=10.0, token=3, holder=HOLDER_B, remaining=1.8)
    action, sentence = decide(standby(last=held), 10.01)
    assert action == Action(Step.WAIT, Why.HELD, until=10.0 + T.poll)
    assert sentence == (
        "standby: b holds lease token 3 (1.80 s left unless renewed); trying again in 0.49 s"
    )
    # The grant ends sooner than the next poll: try just after it ends.
    soon = Reply(Answer.HELD, at=10.0, token=3, holder=HOLDER_B, remaining=0.2)
    action, _ = decide(standby(last=soon), 10.01)
    assert action.until == pytest.approx(10.2 + LAPSE_SLACK)
    assert decide(standby(last=soon), 10.2 + LAPSE_SLACK)[0].step is Step.ACQUIRE
    assert decide(standby(last=held), 10.5)[0] == Action(Step.ACQUIRE, Why.POLL)


def test_a_lapsed_grant_not_yet_taken_is_tried_again_without_waiting_long() -> None:
    lapsed = Reply(Answer.HELD, at=10.0, token=3, holder=HOLDER_B, remaining=-0.5)
    assert decide(standby(last=lapsed), 10.0)[0].until == pytest.approx(10.0 + LAPSE_SLACK)


def test_a_standby_without_its_database_says_so_and_keeps_polling() -> None:
    failed = Reply(Answer.FAILED, at=20.0, error="OperationalError: connection refused")
    action, sentence = decide(standby(last=failed), 20.1)
    assert action == Action(Step.WAIT, Why.NO_DATABASE, until=20.0 + T.poll)
    assert sentence == (
        "standby: the database did not answer (OperationalError: connection refused); "
        "trying again in 0.40 s"
    )
    assert Why.NO_DATABASE.level == logging.WARNING
    assert decide(standby(last=failed), 20.5)[0].step is Step.ACQUIRE


def test_an_announced_release_is_tried_at_once() -> None:
    held = Reply(Answer.HELD, at=10.0, token=3, holder=HOLDER_B, remaining=1.8)
    action, sentence = decide(standby(last=held, notified=True), 10.01)
    assert action == Action(Step.ACQUIRE, Why.NOTIFIED)
    assert sentence == "the holder released the lease: trying it now"


def test_a_standby_that_released_waits_a_poll_before_trying_again() -> None:
    released = Reply(Answer.RELEASED, at=30.0)
    action, _ = decide(standby(last=released), 30.0)
    assert action == Action(Step.WAIT, Why.STANDBY, until=30.0 + T.poll)


def test_a_stopping_standby_exits_with_nothing_to_release() -> None:
    action, sentence = decide(standby(stopping=True, notified=True), 1.0)
    assert action.step is Step.EXIT
    assert sentence == "node stopping: standby, no lease to release"


# --- holder ------------------------------------------------------------------------------


def test_a_grant_starts_the_runtime_and_names_the_node_that_held_it() -> None:
    granted = Reply(Answer.GRANTED, at=100.0, token=7, holder=HOLDER_B)
    action, sentence = decide(holding(Runtime.STOPPED, last=granted), 100.0)
    assert action == Action(Step.START, Why.ACQUIRED)
    assert sentence == "acquired lease token 7: it had lapsed (held by b); starting the runtime"
    first = Reply(Answer.GRANTED, at=100.0, token=1, holder=None)
    assert decide(holding(Runtime.STOPPED, last=first), 100.0)[1] == (
        "acquired lease token 7: it had lapsed; starting the runtime"
    )


def test_a_holder_renews_every_renew_interval_while_it_starts_and_runs() -> None:
    for runtime, why in ((Runtime.STARTING, Why.STARTING), (Runtime.RUNNING, Why.ACTIVE)):
        renewed = Reply(Answer.RENEWED, at=100.0)
        action, sentence = decide(holding(runtime, last=renewed), 100.2)
        assert action == Action(Step.WAIT, why, until=100.0 + T.renew)
        assert "next renewal in 0.30 s" in sentence
        assert decide(holding(runtime, last=renewed), 100.5)[0] == Action(Step.RENEW, Why.RENEW_DUE)
    assert decide(holding(), 100.3)[1] == "active: holding lease token 7; next renewal in 0.20 s"


def test_a_failed_renewal_is_retried_a_retry_timeout_after_it_was_sent() -> None:
    failed = Reply(Answer.FAILED, at=100.5, error="TimeoutError: no answer within 0.5 s")
    action, sentence = decide(holding(last=failed), 100.7)
    assert action == Action(Step.WAIT, Why.RENEW_FAILED, until=101.0)
    assert sentence == (
        "renewing lease token 7 failed (TimeoutError: no answer within 0.5 s); retrying in "
        "0.30 s, stepping down in 0.80 s unless it succeeds"
    )
    assert decide(holding(last=failed), 101.0)[0].step is Step.RENEW


def test_a_holder_steps_down_a_margin_before_its_grant_can_end() -> None:
    failed = Reply(Answer.FAILED, at=101.0, error="OperationalError: connection refused")
    deadline = 100.0 + T.ttl - T.margin
    assert decide(holding(last=failed), deadline - 0.001)[0].step is Step.WAIT
    action, sentence = decide(holding(last=failed), deadline)
    assert action == Action(Step.STEP_DOWN, Why.EXPIRING)
    assert sentence == (
        "stepping down: lease token 7 not renewed for 1.50 s (the database did not answer: "
        "OperationalError: connection refused); its grant can end 0.50 s from now and this "
        "node stops routing before that"
    )
    # A node that was paused (SIGSTOP, a long GC, a frozen VM) finds itself past the end.
    assert decide(holding(), 110.0)[1] == (
        "stepping down: lease token 7 not renewed for 10.00 s (no renewal was answered); its "
        "grant may have ended 8.00 s ago (this node was held up)"
    )
    # Its runtime still starting changes nothing: no renewal, no routing.
    assert decide(holding(Runtime.STARTING), deadline)[0].step is Step.STEP_DOWN


def test_the_last_wait_of_a_failing_holder_ends_at_its_deadline() -> None:
    failed = Reply(Answer.FAILED, at=101.2, error="x")
    action, _ = decide(holding(last=failed), 101.3)
    assert action.until == 100.0 + T.ttl - T.margin  # not the retry at 101.7


def test_a_fenced_commit_steps_the_holder_down_at_once() -> None:
    action, sentence = decide(holding(fenced=True), 100.1)
    assert action == Action(Step.STEP_DOWN, Why.FENCED)
    assert sentence == "stepping down: a commit found lease token 7 stale, another node is active"


def test_a_lost_lease_steps_the_holder_down() -> None:
    lost = Reply(Answer.LOST, at=100.5)
    action, sentence = decide(holding(last=lost, renewed_at=100.0), 100.5)
    assert action == Action(Step.STEP_DOWN, Why.LOST)
    assert "lease token 7 is not this node's any more" in sentence


def test_a_runtime_that_did_not_start_gives_the_lease_back() -> None:
    action, sentence = decide(
        holding(Runtime.FAILED, runtime_error="RuntimeError: no config"), 100.1
    )
    assert action == Action(Step.RELEASE, Why.START_FAILED)
    assert sentence == (
        "the runtime did not start (RuntimeError: no config): releasing lease token 7 for "
        "another node"
    )


def test_a_stopping_holder_releases_before_anything_else() -> None:
    action, sentence = decide(holding(stopping=True, fenced=True), 999.0)
    assert action == Action(Step.RELEASE, Why.STOPPING)
    assert sentence.startswith("node stopping: stopping the runtime, then releasing lease token 7")


def test_routine_decisions_are_the_only_ones_always_at_debug() -> None:
    assert {w for w in Why if w.routine} == {Why.POLL, Why.RENEW_DUE}
    assert all(w.level >= logging.INFO for w in Why if not w.routine)
