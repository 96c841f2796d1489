"""Inputs of the routing core: everything that can happen to it.

The core is ``RoutingCore.handle(event, now) -> list[Command]``. Events come from the runtime
(which got them from HTTP, SIP, IM, timers, configuration changes). Ids of tasks are chosen
outside the core (so a request can be retried idempotently); offer ids and codes are chosen by
the core, deterministically.

Events are read-only values, as commands are (``Final`` fields, see ``commands``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from expertline.routing.model import Channel, Presence, RoutingConfig
from expertline.routing.timers import TimerKey


@dataclass(slots=True)
class ConfigChanged:
    """A new configuration version (also the first event a fresh core receives)."""

    config: Final[RoutingConfig]


@dataclass(slots=True)
class PresenceChanged:
    expert_id: Final[str]
    status: Final[Presence]
    source: Final[str] = "rest"


@dataclass(slots=True)
class TaskCreated:
    task_id: Final[str]
    queue_id: Final[str]
    channel: Final[Channel] = "voice"
    priority: Final[int | None] = None  # None: the queue's priority
    caller: Final[str | None] = None
    dialed_number: Final[str | None] = None
    external_id: Final[str | None] = None
    attributes: Final[dict[str, Any]] = field(default_factory=dict)


@dataclass(slots=True)
class OfferAccepted:
    offer_id: Final[str]
    phone: Final[str | None] = None  # the expert asks for the call on another number


@dataclass(slots=True)
class OfferDeclined:
    offer_id: Final[str]


@dataclass(slots=True)
class CallConnected:
    """The routing client (or SIP proxy) says the call reached the expert and was answered."""

    task_id: Final[str]


@dataclass(slots=True)
class CallEnded:
    """The call or chat ended normally after being connected (or the client ends an assigned task).

    ``handed_off``: the call left at its label and was never seen talking (SIP redirect mode:
    the 302 is the end of it for expertline), so its talk time is 0, not assigned-to-end.
    """

    task_id: Final[str]
    handed_off: Final[bool] = False


@dataclass(slots=True)
class TaskAbandoned:
    """The caller gave up (routing client cancel, SIP CANCEL)."""

    task_id: Final[str]


@dataclass(slots=True)
class TaskFailed:
    """The routing client reports a failure; ``disposition`` overrides the TCD code if given."""

    task_id: Final[str]
    disposition: Final[int | None] = None


@dataclass(slots=True)
class DeliveryFailed:
    """SIP proxy: the expert's phone did not answer (19) or was busy (8); the task is requeued."""

    task_id: Final[str]
    disposition: Final[int]  # 19 ring no answer, 8 busy


@dataclass(slots=True)
class TimerFired:
    """A timer set by a ``SetTimer`` command is due. Stale timers are ignored by the core."""

    key: Final[TimerKey]


@dataclass(slots=True)
class Recovered:
    """The runtime restored the core from the database after a restart or failover.

    ``lost_tasks`` are tasks whose outcome cannot be known (for example SIP calls whose legs
    died with the old process): they end with TCD 27. ``failover``: another node routed
    before this one; every expert with an offer or a task in flight is told so.
    """

    lost_tasks: Final[frozenset[str]] = frozenset()
    failover: Final[bool] = False


Event = (
    ConfigChanged
    | PresenceChanged
    | TaskCreated
    | OfferAccepted
    | OfferDeclined
    | CallConnected
    | CallEnded
    | TaskAbandoned
    | TaskFailed
    | DeliveryFailed
    | TimerFired
    | Recovered
)
