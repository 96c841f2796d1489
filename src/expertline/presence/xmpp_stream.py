"""What an XMPP presence source is made of below the ``XmppSource`` (``presence.xmpp``):
its settings and the configuration it reads, the component class that reads either namespace,
how a presence's show is read, connection failures, and ``SourceBase``, the state the
source's parts share (with the reads every part needs: address, link state, presence).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from slixmpp import JID, ClientXMPP, ComponentXMPP
from slixmpp.stanza import Presence as PresenceStanza

from expertline.health import Health
from expertline.presence.link import Link, LinkState
from expertline.presence.mapping import RosterPresence, StatusMap
from expertline.presence.protocol import MessageSet, ReplyBudget
from expertline.routing.model import ExpertSpec, Presence
from expertline.runtime.ports import OfferView, RoutingPort


class Directory(Protocol):
    """What a source needs from the configuration in effect (it changes with config versions)."""

    def experts(self, source_id: str) -> Sequence[ExpertSpec]:
        """Enabled or not, the experts with an ``im`` that this source tracks."""
        ...

    def messages(self, locale: str) -> MessageSet: ...

    def show_rules(self, queue_id: str) -> Mapping[str, str]: ...

    def version(self) -> int:
        """The configuration version in effect; a change makes the source follow it."""
        ...


@dataclass(frozen=True)
class XmppSettings:
    """One source's connection settings (secrets already read from the environment)."""

    id: str
    mode: Literal["account", "component"]
    jid: str  # account: the router's JID; component: the component domain
    secret: str  # account password or component secret
    host: str
    port: int
    status_map: StatusMap
    connect_timeout: float = 10.0
    ping_interval: float = 15.0
    ping_timeout: float = 5.0
    backoff_initial: float = 0.5
    backoff_cap: float = 30.0
    stable_after: float = 10.0  # a session this long resets the backoff
    config_poll: float = 1.0  # how often to look for a new configuration version
    # Subscription requests still unanswered are re-sent in bursts of ``subscribe_burst``
    # with ``subscribe_pause`` of silence between bursts: ejabberd's default
    # mod_pres_counter (5 a minute, the window restarting with every stanza it lets through)
    # silently drops the rest. One request of the 5 is left for the router's own answers.
    subscribe_burst: int = 4
    subscribe_pause: float = 65.0
    subscribe_retry_cap: float = 3600.0  # an expert who does not approve is asked this rarely
    tls_mode: Literal["required", "opportunistic", "off"] = "opportunistic"
    ca_file: str | None = None  # PEM of the authorities to trust; None: the system's


CLIENT_NS = "jabber:client"
UNREADABLE = "(unreadable)"  # a show no status_map names: such a resource counts as away


class Component(ComponentXMPP):
    """A XEP-0114 component that takes stanzas in either namespace.

    jabberd2 (and others) deliver a component's stanzas in ``jabber:client`` rather than
    ``jabber:component:accept``. slixmpp renames only the top element, so the ``<show/>`` of
    an away expert and the ``<body/>`` of an answer stayed in the other namespace and were not
    read: the expert looked available and answers looked empty. Every element of the stanza
    in ``jabber:client`` is renamed here, extensions in their own namespaces are left alone."""

    def incoming_filter(self, xml: Any) -> Any:
        prefix = "{" + CLIENT_NS + "}"
        if not xml.tag.startswith(prefix) and not any(
            child.tag.startswith(prefix) for child in xml
        ):
            return xml
        target = "{" + self.default_ns + "}"
        for element in xml.iter():
            if isinstance(element.tag, str) and element.tag.startswith(prefix):
                element.tag = target + element.tag[len(prefix) :]
        return xml


def read_show(stanza: PresenceStanza) -> str | None:
    """The stanza's ``<show/>`` (None: plain available), or ``UNREADABLE`` when it carries a
    show this adapter cannot read (another namespace): never read as available."""
    show = stanza["show"] or None
    if show is not None:
        return str(show)
    for child in stanza.xml:
        if isinstance(child.tag, str) and child.tag.rsplit("}", 1)[-1] == "show":
            return UNREADABLE
    return None


class _SaidOnce(logging.Filter):
    """slixmpp logs a TLS or SASL failure at ERROR on every attempt; the source says it once,
    in its own words (``xmpp connect failed ... kind=tls_failed``)."""

    QUIET = ("CERT: Invalid certificate trust chain.", "No appropriate login method.")

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() not in self.QUIET


for _name in ("slixmpp.xmlstream.xmlstream", "slixmpp.features.feature_mechanisms.mechanisms"):
    logging.getLogger(_name).addFilter(_SaidOnce())

FailureKind = Literal["not_ready", "auth_failed", "tls_failed"]


class LinkFailed(Exception):
    """A connection attempt failed; ``kind`` says whether retrying can help."""

    def __init__(self, kind: FailureKind, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


def _encrypted(client: ClientXMPP | ComponentXMPP) -> bool:
    transport = client.transport
    return transport is not None and transport.get_extra_info("ssl_object") is not None


def bare(jid: str) -> str:
    """Normalized bare JID: what offers are addressed to and answers are checked against."""
    return JID(jid).bare.lower()


class SourceBase:
    """The state an ``XmppSource`` keeps, shared by its parts (the link here and in
    ``xmpp.py``, the roster in ``xmpp_roster.py``, offers over IM in ``xmpp_im.py``);
    ``XmppSource.__init__`` sets every attribute."""

    settings: XmppSettings
    id: str
    name: str
    _port: RoutingPort
    _directory: Directory
    _health: Health | None
    _health_required: bool
    _clock: Callable[[], float]
    _link: Link
    _roster: RosterPresence
    _client: ClientXMPP | ComponentXMPP | None
    _served: dict[str, ExpertSpec]  # bare im -> expert
    _jid_of: dict[str, str]  # expert id -> bare im
    _sent: dict[str, dict[str, OfferView]]  # expert -> recent offers by code
    _budget: ReplyBudget
    _asked: dict[str, tuple[int, float]]  # bare jid -> (requests, next due)
    _pace_open_at: float  # monotonic time the next burst of requests may go
    _confirmed: set[str]  # component mode: experts whose server said we are subscribed
    subscribe_requests: int
    unsubscribed: dict[str, str]

    @property
    def link_state(self) -> LinkState:
        """The state of the server link (``presence/link.py``), read by metrics."""
        return self._link.state

    @property
    def address(self) -> str:
        """The JID offers come from."""
        return bare(self.settings.jid)

    @property
    def up(self) -> bool:
        return self._link.up

    def presence_of(self, expert_id: str) -> Presence:
        """What this source currently makes of an expert (offline while the link is down)."""
        jid = self._jid_of.get(expert_id)
        if not self._link.up or jid is None:
            return Presence.OFFLINE
        return self._roster.aggregate(jid)

    def _report_health(self, up: bool, detail: str) -> None:
        if self._health is not None:
            self._health.report(f"presence:{self.id}", up, detail, self._health_required)
