"""The life of one presence source's server link, with no I/O: states, transitions, backoff.

``LINK`` is a machine of the kit (``expertline.machine``)::

    stopped --start--> connecting --connected--> online
                 ^         |                        |
                 |      failed                    lost
                 |         v                        |
                 +------ waiting <------------------+
                          --retry--> connecting
    (any) --stop--> stopped

Every change of a link's state goes through ``Link.fire``; an undefined transition raises, so
the supervisor cannot drift into a state nobody drew. docs/presence-states.md is drawn from the
table (``presence.diagram``). ``Backoff`` gives the wait before each retry: capped exponential
with jitter, reset once a session has stayed up for ``stable_after`` seconds.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from expertline.machine import IllegalTransition, Machine


class LinkState(StrEnum):
    STOPPED = "stopped"  # not started, or stopped
    CONNECTING = "connecting"  # a connection attempt (and session setup) is under way
    ONLINE = "online"  # the session is up: presence counts, offers go out
    WAITING = "waiting"  # backing off after a failed attempt or a lost session


class LinkEvent(StrEnum):
    START = "start"
    CONNECTED = "connected"
    FAILED = "failed"
    LOST = "lost"
    RETRY = "retry"
    STOP = "stop"


EVENT_MEANINGS: Final[Mapping[LinkEvent, str]] = {
    LinkEvent.START: "the source is started: the first connection attempt begins",
    LinkEvent.CONNECTED: "the session is up: logged in, roster fetched, subscriptions sent",
    LinkEvent.FAILED: "an attempt failed (not ready, refused password, TLS): back off",
    LinkEvent.LOST: (
        "the session ended (disconnected, no ping answer, or this node is no longer the active"
        " one in component mode): experts set offline"
    ),
    LinkEvent.RETRY: "the backoff wait is over: connect again",
    LinkEvent.STOP: "the source is stopped",
}

_STOP: Final = {LinkEvent.STOP: LinkState.STOPPED}

LINK: Final[Machine[LinkState, LinkEvent]] = Machine(
    name="presence link",
    table={
        LinkState.STOPPED: {LinkEvent.START: LinkState.CONNECTING, **_STOP},
        LinkState.CONNECTING: {
            LinkEvent.CONNECTED: LinkState.ONLINE,
            LinkEvent.FAILED: LinkState.WAITING,
            **_STOP,
        },
        LinkState.ONLINE: {LinkEvent.LOST: LinkState.WAITING, **_STOP},
        LinkState.WAITING: {LinkEvent.RETRY: LinkState.CONNECTING, **_STOP},
    },
    initial=LinkState.STOPPED,
)

# The table as (state, event) -> state pairs.
TRANSITIONS: Final[Mapping[tuple[LinkState, LinkEvent], LinkState]] = {
    (state, event): target for state, row in LINK.table.items() for event, target in row.items()
}


class LinkTransitionError(RuntimeError):
    """An event that has no transition from the current state (a supervisor bug)."""


@dataclass
class Link:
    state: LinkState = LinkState.STOPPED

    def fire(self, event: LinkEvent | str) -> LinkState:
        try:
            self.state = LINK.fire(self.state, LinkEvent(event))
        except (IllegalTransition, ValueError):
            raise LinkTransitionError(f"no transition from {self.state} on {event}") from None
        return self.state

    @property
    def up(self) -> bool:
        return self.state == LinkState.ONLINE


@dataclass
class Backoff:
    """Capped exponential backoff: ``initial * factor**n``, at most ``cap``, times a random
    factor in ``[1 - jitter, 1]`` so many routers restarting together do not retry in step."""

    initial: float = 0.5
    cap: float = 30.0
    factor: float = 2.0
    jitter: float = 0.3
    attempt: int = 0

    def next_delay(self, rand: Callable[[], float] = random.random) -> float:
        raw = min(self.cap, self.initial * self.factor**self.attempt)
        self.attempt += 1
        return raw * (1.0 - self.jitter * rand())

    def reset(self) -> None:
        self.attempt = 0
