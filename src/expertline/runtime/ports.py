"""The interfaces between the runtime and its adapters (XMPP, REST channel, web console, SIP).

*Expert channels* carry offers to experts and bring their answers and presence back. The
runtime hands each offer-related command to the channel that reaches that expert; channels call
the ``RoutingPort`` for everything they learn. The REST presence/offer endpoints are one user
of ``RoutingPort``; the XMPP adapter another; the SIP front uses the task half.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from expertline.routing.model import ExpertSpec, Presence

TaskEventType = Literal["connected", "ended", "abandoned", "failed"]


@dataclass(frozen=True)
class OfferView:
    """An offer as shown to an expert, with what the text templates need."""

    id: str
    task_id: str
    code: str
    expert_id: str
    status: str  # open | accepted | declined | timeout | withdrawn
    queue_id: str
    queue_name: str
    caller: str | None
    created_at: float  # epoch seconds
    expires_at: float | None
    task_created_at: float
    notice_only: bool
    # Task attributes after the queue's ``show`` rules: hidden ones removed, masked ones masked.
    shown_attributes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class AnswerResult:
    """The outcome of an accept/decline: ``ok`` or why it changed nothing."""

    ok: bool
    offer: OfferView | None
    reason: str | None = None  # unknown | closed | capacity | forbidden


@dataclass(frozen=True)
class TaskView:
    id: str
    code: str
    status: str
    queue: str
    expert: str | None
    label: str | None
    created_at: str  # ISO 8601 UTC
    extra: dict[str, Any] = field(default_factory=dict)


class RoutingPort(Protocol):
    """What adapters may ask of the runtime. All methods run in the runtime's event loop."""

    async def async_set_presence(self, expert_id: str, status: Presence, source: str) -> None: ...

    async def async_accept(self, offer_id: str, phone: str | None = None) -> AnswerResult: ...

    async def async_decline(self, offer_id: str) -> AnswerResult: ...

    def open_offers(self, expert_id: str) -> list[OfferView]: ...

    def expert(self, expert_id: str) -> ExpertSpec | None: ...

    def expert_by_im(self, address: str) -> ExpertSpec | None: ...


class ExpertChannel(Protocol):
    """An adapter that reaches experts: it shows offers and outcomes to them."""

    name: str

    def reaches(self, expert: ExpertSpec) -> bool:
        """True when this channel can deliver texts to this expert (e.g. XMPP: has an ``im``)."""
        ...

    async def async_offer(self, offer: OfferView) -> None: ...

    async def async_withdrawn(self, offer: OfferView, reason: str) -> None: ...

    async def async_accepted(self, offer: OfferView) -> None: ...

    async def async_notice(self, expert: ExpertSpec, message: str) -> None: ...
