"""The interfaces between the runtime and its adapters (XMPP, REST channel, web console, SIP).

*Expert channels* carry offers to experts and bring their answers and presence back. The
runtime hands each offer-related command to the channel that reaches that expert; channels call
the ``RoutingPort`` for everything they learn. The REST presence/offer endpoints are one user
of ``RoutingPort``; the XMPP adapter another; the SIP front uses the task half.

The values that cross these ports are read-only by type (``Final`` fields), not ``frozen``
(see ``routing.commands``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

from expertline.routing.model import ExpertSpec, Presence, QueueSpec, RoutingConfig

if TYPE_CHECKING:
    from expertline.config.schema import ConfigDocument

TaskEventType = Literal["connected", "ended", "abandoned", "failed"]


@dataclass(slots=True)
class OfferView:
    """An offer as shown to an expert, with what the text templates need."""

    id: Final[str]
    task_id: Final[str]
    code: Final[str]
    expert_id: Final[str]
    status: Final[str]  # open | accepted | declined | timeout | withdrawn
    queue_id: Final[str]
    queue_name: Final[str]
    caller: Final[str | None]  # after the queue's ``show`` rule for ``caller`` (None when hidden)
    created_at: Final[float]  # epoch seconds
    expires_at: Final[float | None]
    task_created_at: Final[float]
    notice_only: Final[bool]
    # Task attributes after the queue's ``show`` rules: hidden ones removed, masked ones masked.
    shown_attributes: Final[dict[str, str]] = field(default_factory=dict)


@dataclass(slots=True)
class AnswerResult:
    """The outcome of an accept/decline: ``ok`` or why it changed nothing."""

    ok: Final[bool]
    offer: Final[OfferView | None]
    reason: Final[str | None] = None  # unknown | closed | capacity | phone | forbidden


@dataclass(slots=True)
class TaskView:
    id: Final[str]
    code: Final[str]
    status: Final[str]
    queue: Final[str]
    expert: Final[str | None]
    label: Final[str | None]
    created_at: Final[str]  # ISO 8601 UTC
    extra: Final[dict[str, Any]] = field(default_factory=dict)


class RoutingPort(Protocol):
    """What adapters may ask of the runtime. All methods run in the runtime's event loop."""

    @property
    def running(self) -> bool:
        """False while the runtime is not taking work (starting, stopped, an HA standby)."""
        ...

    async def async_set_presence(self, expert_id: str, status: Presence, source: str) -> None: ...

    async def async_accept(self, offer_id: str, phone: str | None = None) -> AnswerResult: ...

    async def async_decline(self, offer_id: str) -> AnswerResult: ...

    def open_offers(self, expert_id: str) -> list[OfferView]: ...

    def expert(self, expert_id: str) -> ExpertSpec | None: ...

    def expert_by_im(self, address: str) -> ExpertSpec | None: ...

    def offer(self, offer_id: str) -> OfferView | None: ...

    def expert_state(self, expert_id: str) -> dict[str, Any] | None:
        """The expert's live state (presence, state, tasks, open offers), or None."""
        ...

    def show_rules(self, queue_id: str) -> dict[str, str]:
        """What an expert may see of the queue's tasks (callers and attributes)."""
        ...

    @property
    def config(self) -> RoutingConfig:
        """The routing configuration in effect (a new object whenever it changes)."""
        ...

    @property
    def document(self) -> ConfigDocument | None:
        """The configuration document in effect (texts, presence sources), if any."""
        ...

    def register_channel(self, channel: ExpertChannel) -> None:
        """Offers and notices to the experts ``channel`` reaches go through it."""
        ...

    def unregister_channel(self, channel: ExpertChannel) -> None: ...


class ExpertChannel(Protocol):
    """An adapter that reaches experts: it shows offers and outcomes to them."""

    name: str

    def reaches(self, expert: ExpertSpec) -> bool:
        """True when this channel can deliver texts to this expert (e.g. XMPP: has an ``im``)."""
        ...

    async def async_offer(self, offer: OfferView) -> None: ...

    async def async_withdrawn(self, offer: OfferView, reason: str) -> None: ...

    async def async_accepted(self, offer: OfferView) -> None: ...

    async def async_notice(self, expert: ExpertSpec, message: str, count: int = 0) -> None: ...

    def resync_presence(self) -> None:
        """The runtime (re)started from the database, which may hold another node's view
        (an HA takeover): report every expert's presence again."""
        ...


@dataclass(slots=True)
class TaskRequest:
    """A routing request from a routing client (HTTP) or the SIP front."""

    entry_point: Final[str | None] = None  # dialed number / route key
    queue: Final[str | None] = None
    caller: Final[str | None] = None
    channel: Final[Literal["voice", "chat"]] = "voice"
    attributes: Final[dict[str, Any]] = field(default_factory=dict)
    priority: Final[int | None] = None
    external_id: Final[str | None] = None
    callback_url: Final[str | None] = None
    origin: Final[Literal["http", "sip"]] = "http"


class TaskPort(Protocol):
    """What routing clients (HTTP API, SIP front) ask of the runtime.

    Errors are typed: ``NotFound`` for an unknown entry point/queue/task, ``InvalidInput`` for
    bad requests, ``Conflict`` for an event that does not apply to the task's status.
    """

    async def async_create_task(self, request: TaskRequest) -> TaskView: ...

    async def async_create_task_ex(self, request: TaskRequest) -> tuple[TaskView, bool]:
        """Like ``async_create_task``, and whether the task is new (False: the task that
        already had this ``external_id``, unchanged)."""
        ...

    async def async_task_event(
        self,
        task_id: str,
        type: TaskEventType,
        disposition: int | None = None,
        handed_off: bool = False,
    ) -> TaskView:
        """``handed_off`` (with ``ended``): the call left at its label unseen (SIP redirect),
        so it has no talk time."""
        ...

    async def async_delivery_failed(self, task_id: str, disposition: int) -> TaskView:
        """SIP proxy: the expert's phone did not answer (19) or was busy (8); requeue."""
        ...

    def task(self, task_id: str) -> TaskView | None: ...

    async def async_task(self, task_id: str) -> TaskView | None:
        """Like ``task``, and also a task that ended long ago (read from the database)."""
        ...

    async def async_wait_change(
        self, task_id: str, seen_status: str, timeout: float
    ) -> TaskView | None:
        """Return the task as soon as its status differs from ``seen_status`` (or at timeout)."""
        ...

    def queue(self, queue_id: str) -> QueueSpec | None:
        """The queue's ``QueueSpec`` (ring_timeout etc.), or None."""
        ...

    @property
    def config(self) -> RoutingConfig:
        """The routing configuration in effect on this node (entry points' SIP modes, the
        experts' phones); a new object whenever the configuration changes."""
        ...


class StatePort(Protocol):
    """What the web API and pages read of the live state and the record feed."""

    @property
    def last_feed_id(self) -> int: ...

    async def async_wait_feed(self, after: int, timeout: float) -> int:
        """The last feed id once the feed has rows after ``after`` (or at ``timeout``)."""
        ...

    def queue_state(self, queue_id: str) -> dict[str, Any] | None: ...


class RuntimePort(TaskPort, RoutingPort, StatePort, Protocol):
    """Everything the HTTP API asks of the node's runtime."""

    @property
    def running(self) -> bool: ...
