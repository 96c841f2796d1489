"""The routing core's view of the configuration: plain frozen data, no CEL, no I/O.

The configuration domain (``expertline.config``) validates YAML and compiles CEL; the
eligibility engine (``expertline.eligibility``) evaluates each queue's selection (and
each escalation step's) over the experts' attributes. The core receives the result as sets of
matching expert ids and never evaluates an expression itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final, Literal

Order = Literal[
    "longest_idle", "most_skilled", "least_busy", "round_robin", "random", "closest_match"
]


class Presence(StrEnum):
    """An expert's presence: the one list of values, for the IM sources, the REST API, routing
    and the pages. Only ``available`` experts are offered tasks."""

    AVAILABLE = "available"
    AWAY = "away"
    DND = "dnd"
    OFFLINE = "offline"


# The value routing compares on its hot paths, as a module constant: reading an enum member as a
# class attribute (``Presence.AVAILABLE``) costs about 0.2 µs on Python 3.11.
AVAILABLE: Final = Presence.AVAILABLE

Channel = Literal["voice", "chat"]
SipMode = Literal["redirect", "proxy"]


@dataclass(frozen=True, slots=True)
class ExpertSpec:
    id: str
    name: str
    phone: str
    im: str | None = None
    max_tasks: int = 1
    may_decline: bool = True
    enabled: bool = True
    locale: str = "en"
    # Other numbers the expert may ask for when accepting (``phone`` always may be).
    phones: tuple[str, ...] = ()
    # Numeric attributes (proficiency, number) for most_skilled and closest_match.
    numbers: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class OnMaxWait:
    """What happens at max wait: exactly one of overflow / label / reject."""

    kind: Literal["overflow", "label", "reject"] = "reject"
    target: str | None = None  # queue id for overflow, label for label


@dataclass(frozen=True, slots=True)
class EscalationStep:
    after: float  # seconds waited (since the task entered this queue) before this step applies


MAX_TASK_LIFETIME = 8 * 3600.0  # seconds; the default bound of a task that holds an expert


@dataclass(frozen=True, slots=True)
class QueueSpec:
    id: str
    name: str
    order: Order = "longest_idle"
    skill: str | None = None
    offer_to: int | None = 1  # None = all
    offer_timeout: float = 20.0
    max_wait: float = 300.0
    on_max_wait: OnMaxWait = OnMaxWait()
    wrap_up: float = 0.0
    decline_cooldown: float = 0.0
    max_no_answer: int = 0
    delivery_cooldown: float = 5.0  # after a failed delivery, per expert and task
    max_delivery_failures: int = 3  # failed deliveries in a row that set the expert away
    ring_timeout: float = 20.0
    service_level: float = 20.0
    max_task_lifetime: float = MAX_TASK_LIFETIME  # with the expert this long after creation: TCD 41
    priority: int = 0
    escalate: tuple[EscalationStep, ...] = ()
    # A regular expression (full match): other numbers experts may ask for when accepting.
    accept_phones: str | None = None


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    """One configuration version as the core needs it.

    ``matches[queue_id][step]`` is the set of expert ids whose attributes satisfy the queue's
    selection at escalation ``step`` (0 = the queue's own ``select``, 1.. = ``escalate`` steps).
    """

    version: int
    experts: dict[str, ExpertSpec]
    queues: dict[str, QueueSpec]
    matches: dict[str, tuple[frozenset[str], ...]]
    entry_points: dict[str, str] = field(default_factory=dict)  # dialed number -> queue id
    # dialed number -> the entry point's own SIP mode (absent: the node's --sip-mode)
    sip_modes: dict[str, SipMode] = field(default_factory=dict)
