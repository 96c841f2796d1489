"""The life of one presence source's server link, with no I/O: states, transitions, backoff.

::

    stopped --start--> connecting --connected--> online
                 ^         |                        |
                 |      failed                    lost
                 |         v                        |
                 +------ waiting <------------------+
                          --retry--> connecting
    (any) --stop--> stopped

Transitions are data; an undefined one raises, so the supervisor cannot drift into a state
nobody drew. ``Backoff`` gives the wait before each retry: capped exponential with jitter,
reset once a session has stayed up for ``stable_after`` seconds.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

LinkState = Literal["stopped", "connecting", "online", "waiting"]
LinkEvent = Literal["start", "connected", "failed", "lost", "retry", "stop"]

TRANSITIONS: Final[dict[tuple[LinkState, LinkEvent], LinkState]] = {
    ("stopped", "start"): "connecting",
    ("connecting", "connected"): "online",
    ("connecting", "failed"): "waiting",
    ("online", "lost"): "waiting",
    ("waiting", "retry"): "connecting",
    ("stopped", "stop"): "stopped",
    ("connecting", "stop"): "stopped",
    ("online", "stop"): "stopped",
    ("waiting", "stop"): "stopped",
}


class LinkTransitionError(RuntimeError):
    """An event that has no transition from the current state (a supervisor bug)."""


@dataclass
class Link:
    state: LinkState = "stopped"

    def fire(self, event: LinkEvent) -> LinkState:
        try:
            self.state = TRANSITIONS[(self.state, event)]
        except KeyError:
            raise LinkTransitionError(f"no transition from {self.state} on {event}") from None
        return self.state

    @property
    def up(self) -> bool:
        return self.state == "online"


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
