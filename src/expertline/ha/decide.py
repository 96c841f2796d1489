"""The lease keeper's decisions, with no I/O: ``decide(observation, now) -> (action, sentence)``.

Like Patroni's ``ha.py``, every cycle of the keeper ends in one sentence that says what it
decided and why ("acquired lease token 7: it had lapsed (held by rt-a); starting the
runtime"). The keeper (``keeper.py``) gathers what it knows into an ``Observation`` (the
token it holds, the last answer of the database, its runtime, a fence trip, a stop, a NOTIFY),
asks ``decide``, logs the sentence and performs the action. Everything here is a function of
the observation and the time, so every branch is tested on a fake clock.

The times follow one rule, as Patroni's ``loop_wait + 2 * retry_timeout <= ttl``::

    renew + 2 * retry_timeout + margin <= ttl

A holder renews every ``renew`` seconds; a renewal that fails (or gets no answer within
``retry_timeout``) is tried again ``retry_timeout`` after it was sent; ``margin`` before its
grant can end (``ttl`` after the last renewal that succeeded was *sent*, by the database's
clock) the holder steps down on its own. So a holder always gets two attempts before it
gives up, and it stops routing before any other node can take the lease.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

LAPSE_SLACK = 0.01  # a standby tries this long after the holder's grant should have ended


@dataclass(frozen=True)
class LeaseTimes:
    """``ttl``: how long a grant lasts; renewed every ``renew``; a call to the database is
    given up after ``retry_timeout``; a holder steps down ``margin`` before its grant can end;
    a standby tries the lease every ``poll`` (and when the holder's grant should have ended,
    and at once when a release is announced)."""

    ttl: float = 2.0
    renew: float = 0.5
    retry_timeout: float = 0.5
    poll: float = 0.5
    margin: float = 0.5

    def problems(self) -> list[str]:
        """Why these times are unsafe or meaningless; empty when they are fine."""
        found = [
            f"{name} must be more than 0 s (got {value:g})"
            for name, value in vars(self).items()
            if not value > 0
        ]
        need = self.renew + 2 * self.retry_timeout + self.margin
        if not found and need > self.ttl + 1e-9:
            found.append(
                f"the lease time {self.ttl:g} s is too short: renew ({self.renew:g} s) + 2 x "
                f"retry_timeout ({self.retry_timeout:g} s) + the {self.margin:g} s step-down "
                f"margin = {need:g} s must not exceed it"
            )
        return found


class Step(enum.StrEnum):
    ACQUIRE = "acquire"  # try to take the lease (it takes it only if it lapsed)
    START = "start"  # the lease is ours: start the runtime
    RENEW = "renew"
    WAIT = "wait"  # nothing to do until ``until`` (or until something wakes the keeper)
    STEP_DOWN = "step-down"  # stop the runtime; the lease is gone or left to lapse
    RELEASE = "release"  # stop the runtime, then release the lease and announce it
    EXIT = "exit"  # stopping, nothing held: the keeper ends


class Why(enum.Enum):
    """What a decision answers to, with the level its sentence is logged at. ``routine``
    decisions (a due poll or renewal) are always at debug; the others are at their level when
    the situation changes and at debug while it lasts, so a steady pair logs nothing."""

    POLL = ("poll", logging.DEBUG, True)
    RENEW_DUE = ("renew-due", logging.DEBUG, True)
    NOTIFIED = ("notified", logging.INFO, False)
    HELD = ("held", logging.INFO, False)
    STANDBY = ("standby", logging.INFO, False)
    NO_DATABASE = ("no-database", logging.WARNING, False)
    ACQUIRED = ("acquired", logging.INFO, False)
    STARTING = ("starting", logging.INFO, False)
    ACTIVE = ("active", logging.INFO, False)
    RENEW_FAILED = ("renew-failed", logging.WARNING, False)
    FENCED = ("fenced", logging.WARNING, False)
    LOST = ("lost", logging.WARNING, False)
    EXPIRING = ("expiring", logging.WARNING, False)
    START_FAILED = ("start-failed", logging.ERROR, False)
    STOPPING = ("stopping", logging.INFO, False)

    def __init__(self, code: str, level: int, routine: bool) -> None:
        self.code, self.level, self.routine = code, level, routine


@dataclass(frozen=True)
class Action:
    step: Step
    why: Why
    until: float = 0.0  # WAIT: when to look again


class Answer(enum.Enum):
    GRANTED = "granted"  # acquire took the lease
    HELD = "held"  # acquire found it held by a node
    RENEWED = "renewed"
    LOST = "lost"  # renew found the lease taken by another node
    FAILED = "failed"  # the database did not answer (error, or no answer in time)
    RELEASED = "released"  # this node let it go


@dataclass(frozen=True)
class Reply:
    """The last database call and its answer."""

    answer: Answer
    at: float  # local time the call was sent
    token: int | None = None  # GRANTED: the new token; HELD: the holder's
    holder: str | None = None  # GRANTED: who held it before; HELD: who holds it
    remaining: float | None = None  # HELD: seconds the holder's grant still runs
    error: str = ""  # FAILED: what went wrong


class Runtime(enum.Enum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    FAILED = "failed"  # its start raised


@dataclass(frozen=True)
class Observation:
    times: LeaseTimes
    token: int | None = None  # the lease token this node holds
    renewed_at: float = 0.0  # holder: when the call that granted or last renewed it was sent
    last: Reply | None = None
    runtime: Runtime = Runtime.STOPPED
    runtime_error: str = ""
    fenced: bool = False  # a commit found this node's token stale
    stopping: bool = False  # the node stops (SIGTERM)
    notified: bool = False  # a release was announced (NOTIFY)

    @property
    def deadline(self) -> float:
        """Holder: the local time at which it stops routing unless a renewal succeeds."""
        return self.renewed_at + self.times.ttl - self.times.margin


def node_of(holder: str | None) -> str | None:
    """Holders are ``node/pid/nonce``: the node's name."""
    return holder.split("/", 1)[0] if holder else None


def decide(o: Observation, now: float) -> tuple[Action, str]:
    """What the keeper does next, and the sentence that says why."""
    return _standby(o, now) if o.token is None else _holder(o, o.token, now)


def _standby(o: Observation, now: float) -> tuple[Action, str]:
    last = o.last
    if o.stopping:
        return Action(Step.EXIT, Why.STOPPING), "node stopping: standby, no lease to release"
    if o.notified:
        return Action(Step.ACQUIRE, Why.NOTIFIED), "the holder released the lease: trying it now"
    if last is None:
        return Action(Step.ACQUIRE, Why.POLL), "standby: trying the lease"
    due = last.at + o.times.poll
    if last.answer is Answer.HELD and last.remaining is not None:
        due = min(due, last.at + max(0.0, last.remaining) + LAPSE_SLACK)
    if now >= due:
        return Action(Step.ACQUIRE, Why.POLL), "standby: trying the lease"
    wait = Action(Step.WAIT, Why.STANDBY, due)
    if last.answer is Answer.FAILED:
        return (
            Action(Step.WAIT, Why.NO_DATABASE, due),
            f"standby: the database did not answer ({last.error}); "
            f"trying again in {due - now:.2f} s",
        )
    if last.answer is Answer.HELD:
        return (
            Action(Step.WAIT, Why.HELD, due),
            f"standby: {node_of(last.holder)} holds lease token {last.token} "
            f"({last.remaining:.2f} s left unless renewed); trying again in {due - now:.2f} s",
        )
    return wait, f"standby: trying the lease in {due - now:.2f} s"


def _holder(o: Observation, token: int, now: float) -> tuple[Action, str]:
    last = o.last
    if o.stopping:
        return (
            Action(Step.RELEASE, Why.STOPPING),
            f"node stopping: stopping the runtime, then releasing lease token {token} so the "
            "standby takes over at once",
        )
    if o.fenced:
        return (
            Action(Step.STEP_DOWN, Why.FENCED),
            f"stepping down: a commit found lease token {token} stale, another node is active",
        )
    if last is not None and last.answer is Answer.LOST:
        return (
            Action(Step.STEP_DOWN, Why.LOST),
            f"stepping down: lease token {token} is not this node's any more "
            "(it lapsed and another node took it)",
        )
    if o.runtime is Runtime.FAILED:
        return (
            Action(Step.RELEASE, Why.START_FAILED),
            f"the runtime did not start ({o.runtime_error}): releasing lease token {token} "
            "for another node",
        )
    if now >= o.deadline:
        cause = (
            f"the database did not answer: {last.error}"
            if last is not None and last.answer is Answer.FAILED
            else "no renewal was answered"
        )
        ends = o.renewed_at + o.times.ttl - now
        when = (
            f"its grant can end {ends:.2f} s from now and this node stops routing before that"
            if ends > 0
            else f"its grant may have ended {-ends:.2f} s ago (this node was held up)"
        )
        return (
            Action(Step.STEP_DOWN, Why.EXPIRING),
            f"stepping down: lease token {token} not renewed for {now - o.renewed_at:.2f} s "
            f"({cause}); {when}",
        )
    if o.runtime is Runtime.STOPPED:
        before = (
            node_of(last.holder) if last is not None and last.answer is Answer.GRANTED else None
        )
        held = f" (held by {before})" if before else ""
        return (
            Action(Step.START, Why.ACQUIRED),
            f"acquired lease token {token}: it had lapsed{held}; starting the runtime",
        )
    failed = last is not None and last.answer is Answer.FAILED
    due = last.at + o.times.retry_timeout if failed and last else o.renewed_at + o.times.renew
    if now >= due:
        return Action(Step.RENEW, Why.RENEW_DUE), f"renewing lease token {token}"
    until = min(due, o.deadline)
    if failed and last:
        return (
            Action(Step.WAIT, Why.RENEW_FAILED, until),
            f"renewing lease token {token} failed ({last.error}); retrying in "
            f"{until - now:.2f} s, stepping down in {o.deadline - now:.2f} s unless it succeeds",
        )
    if o.runtime is Runtime.STARTING:
        return (
            Action(Step.WAIT, Why.STARTING, until),
            f"holding lease token {token} while the runtime starts; next renewal in "
            f"{until - now:.2f} s",
        )
    return (
        Action(Step.WAIT, Why.ACTIVE, until),
        f"active: holding lease token {token}; next renewal in {until - now:.2f} s",
    )
