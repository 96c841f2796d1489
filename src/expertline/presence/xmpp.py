"""The XMPP presence source and IM offer channel (slixmpp), account or component mode.

One ``XmppSource`` is one link to one XMPP server. It

- logs in (account mode: a normal user, TLS as configured; component mode: XEP-0114, only
  while its node is the active one), keeps the roster in step with the experts it serves
  (subscribe to added ones, remove dropped ones from its ``expertline`` roster group), re-sends
  unanswered subscription requests paced under a server's flood limit until the roster shows
  every subscription, and resyncs presence after every (re)connect (component mode: a probe
  after each ``subscribed``, as not every server sends presence with it);
- maps each expert's resources through the ``status_map`` (most available resource wins) and
  tells the runtime through ``RoutingPort.async_set_presence``; one worker does the telling, in
  order, coalescing bursts, so a presence storm costs one call per expert, not per stanza;
- while the link is down, tells the runtime that its experts are offline (no new offers; open
  ones are withdrawn by the core) and reports ``presence:<id>`` down to ``Health``;
- reconnects with capped exponential backoff (``link.Backoff``), detecting dead links with
  XEP-0199 pings;
- carries offer texts out and answers in (``protocol``); an answer counts only from the bare
  JID the offers went to.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, Protocol

from prometheus_client import Gauge
from slixmpp import JID, ClientXMPP, ComponentXMPP
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.stanza import Message
from slixmpp.stanza import Presence as PresenceStanza

from expertline.errors import InvalidInput, NotFound
from expertline.health import Health
from expertline.presence.link import Backoff, Link, LinkEvent, LinkState
from expertline.presence.mapping import RosterPresence, StatusMap
from expertline.presence.protocol import (
    SILENT_WITHDRAWALS,
    Accept,
    Decline,
    MessageSet,
    ReplyBudget,
    Say,
    Unclear,
    answer_outcome,
    decide,
    parse_reply,
    render_accepted,
    render_offer,
    render_withdrawn,
)
from expertline.routing.model import ExpertSpec, Presence
from expertline.runtime.ports import OfferView, RoutingPort

log = logging.getLogger("expertline.presence.xmpp")

STANDBY_RECHECK = 10.0  # seconds between looks at a runtime that is not running
STANDBY_POLL = 0.2  # component mode: seconds between looks at whether this node is active

ROSTER_GROUP = "expertline"
ROSTER_WINDOW = 64  # roster updates in flight at once
RECENT_OFFERS = 20  # per expert, to tell a late answer from an unknown code
CONVERGE_TICK = 1.0  # seconds between looks at the roster for missing subscriptions

UNSUBSCRIBED = Gauge(
    "expertline_presence_unsubscribed",
    "Experts of a presence source whose presence the router is not subscribed to, by reason "
    "(asked: a request is out, awaiting the expert's approval or dropped by a server rate "
    "limit, and is re-sent paced; queued: waiting for the pace to send it)",
    ["source", "reason"],
)


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


class XmppSource:
    """A presence source (``async_start``/``async_stop``) and an ``ExpertChannel``."""

    def __init__(
        self,
        settings: XmppSettings,
        port: RoutingPort,
        directory: Directory,
        health: Health | None = None,
        clock: Callable[[], float] = time.time,
        health_required: bool = True,
    ) -> None:
        self.settings = settings
        self._health_required = health_required  # False for one link of a redundant source
        self.id = settings.id
        self.name = f"xmpp:{settings.id}"
        self._port = port
        self._directory = directory
        self._health = health
        self._clock = clock
        self._link = Link()
        self._backoff = Backoff(settings.backoff_initial, settings.backoff_cap)
        self._roster = RosterPresence(settings.status_map)
        self._client: ClientXMPP | ComponentXMPP | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._version = 0
        self._dirty: dict[str, None] = {}
        self._wake = asyncio.Event()
        self._resynced = asyncio.Event()  # cuts a retry's backoff short
        self._reported: dict[str, Presence] = {}
        self._served: dict[str, ExpertSpec] = {}  # bare im -> expert
        self._jid_of: dict[str, str] = {}  # expert id -> bare im
        self._sent: dict[str, dict[str, OfferView]] = {}  # expert -> recent offers by code
        self._budget = ReplyBudget()
        self._lost: asyncio.Future[str] | None = None
        self._converger: asyncio.Task[None] | None = None
        self._asked: dict[str, tuple[int, float]] = {}  # bare jid -> (requests, next due)
        self._pace_open_at = 0.0  # monotonic time the next burst of requests may go
        self.subscribe_requests = 0  # subscription requests sent (tests read it)
        self.unsubscribed: dict[str, str] = {}  # bare jid -> reason (asked | queued)
        self.connections = 0  # successful sessions so far (tests and metrics read it)
        self.failed_attempts = 0
        self._said = ""  # the TLS failure last logged at ERROR
        self.presence_stanzas = 0  # availability stanzas received (benchmarks read it)
        self.last_presence_at = 0.0  # time.monotonic() of the last one

    # -- lifecycle ---------------------------------------------------------------------------

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

    async def async_start(self) -> None:
        """Start connecting in the background; experts count as offline until the link is up."""
        if self._supervisor is not None:
            return
        self._version = self._directory.version()
        self._refresh_served()
        self._report_health(False, "connecting")
        self._mark_all_dirty()
        self._worker = asyncio.create_task(self._presence_worker(), name=f"{self.name}:presence")
        self._supervisor = asyncio.create_task(self._supervise(), name=f"{self.name}:link")
        self._watcher = asyncio.create_task(self._watch_config(), name=f"{self.name}:config")

    async def async_stop(self) -> None:
        tasks = (self._supervisor, self._worker, self._watcher)
        self._supervisor = self._worker = self._watcher = None
        for task in tasks:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await self._drop_client()
        self._link.fire(LinkEvent.STOP)
        self._report_health(False, "stopped")
        log.info("presence source stopped source=%s", self.id)

    async def async_config_changed(self) -> None:
        """A new configuration version: follow added/removed experts and changed texts."""
        before = set(self._served)
        self._refresh_served()
        after = set(self._served)
        added, removed = sorted(after - before), sorted(before - after)
        if added or removed:
            log.info(
                "roster follows configuration source=%s added=%s removed=%s",
                self.id,
                ",".join(added) or "-",
                ",".join(removed) or "-",
            )
        client = self._client
        if client is not None and self._link.up:
            await self._sync_subscriptions(client)
            if isinstance(client, ClientXMPP) and self._port.running:
                self._probe_subscribed(client, added)
        self._mark_all_dirty()

    def _probe_subscribed(self, client: ClientXMPP, jids: Sequence[str]) -> None:
        """Experts added back whose subscription never went (a shared roster keeps it): the
        server sends nothing new, so ask for their current presence. Safe: only contacts the
        roster says we are subscribed to are probed (see the component note on probes)."""
        roster = client.client_roster
        for jid in jids:
            if roster.has_jid(jid) and roster[jid]["subscription"] in ("to", "both"):
                client.send_presence(pto=JID(jid), ptype="probe")
                log.info("presence probe sent source=%s to=%s reason=added-back", self.id, jid)

    async def _watch_config(self) -> None:
        while True:
            await asyncio.sleep(self.settings.config_poll)
            version = self._directory.version()
            if version != self._version:
                log.info(
                    "configuration changed source=%s version=%d previous=%d",
                    self.id,
                    version,
                    self._version,
                )
                self._version = version
                try:
                    await self.async_config_changed()
                except Exception:
                    log.exception("following the configuration failed source=%s", self.id)

    # -- ExpertChannel -----------------------------------------------------------------------

    def reaches(self, expert: ExpertSpec) -> bool:
        return expert.im is not None and bare(expert.im) in self._served

    async def async_offer(self, offer: OfferView) -> None:
        expert = self._port.expert(offer.expert_id)
        if expert is None or expert.im is None:
            log.warning("offer not sent offer=%s expert=%s reason=no-im", offer.id, offer.expert_id)
            return
        recent = self._sent.setdefault(expert.id, {})
        recent[offer.code] = offer
        while len(recent) > RECENT_OFFERS:
            del recent[next(iter(recent))]
        messages = self._directory.messages(expert.locale)
        text = render_offer(
            offer, messages, self._clock(), self._directory.show_rules(offer.queue_id)
        )
        self._send(expert.im, text, f"offer={offer.id} code={offer.code}")

    async def async_withdrawn(self, offer: OfferView, reason: str) -> None:
        expert = self._port.expert(offer.expert_id)
        if expert is None or expert.im is None or reason in SILENT_WITHDRAWALS:
            return
        text = render_withdrawn(offer, reason, self._directory.messages(expert.locale))
        self._send(expert.im, text, f"withdrawn={offer.id} reason={reason}")

    async def async_accepted(self, offer: OfferView) -> None:
        expert = self._port.expert(offer.expert_id)
        if expert is None or expert.im is None:
            return
        text = render_accepted(offer, self._directory.messages(expert.locale))
        self._send(expert.im, text, f"accepted={offer.id}")

    async def async_notice(self, expert: ExpertSpec, message: str, count: int = 0) -> None:
        if expert.im is None:
            return
        messages = self._directory.messages(expert.locale)
        text = messages.render(message, count=count) if message in messages.templates else message
        self._send(expert.im, text, f"notice={message}")

    def _send(self, to: str, text: str, what: str) -> None:
        client = self._client
        if client is None or not self._link.up:
            log.warning("im not sent source=%s to=%s %s reason=link-down", self.id, to, what)
            return
        mfrom = JID(self.address) if self.settings.mode == "component" else None
        client.send_message(mto=JID(to), mbody=text, mtype="chat", mfrom=mfrom)
        log.info("im sent source=%s to=%s %s", self.id, to, what)

    # -- link supervision --------------------------------------------------------------------

    async def _supervise(self) -> None:
        """Connect, serve, and after any failure wait (capped backoff) and connect again."""
        self._link.fire(LinkEvent.START)
        while True:
            await self._until_component_is_ours()
            try:
                client = await self._connect()
            except LinkFailed as exc:
                self._link.fire(LinkEvent.FAILED)
                self.failed_attempts += 1
                delay = self._backoff.next_delay()
                if exc.kind == "tls_failed":
                    # A configuration problem: one ERROR, then quiet retries (the CA file is
                    # read again at each attempt, so fixing it heals the link).
                    level = logging.ERROR if exc.detail != self._said else logging.DEBUG
                    self._said = exc.detail
                    health = f"{exc.kind}: {exc.detail}"
                else:
                    level = logging.ERROR if exc.kind == "auth_failed" else logging.WARNING
                    health = f"{exc.kind}: {exc.detail}; retry in {delay:.1f}s"
                log.log(
                    level,
                    "xmpp connect failed source=%s kind=%s detail=%s; retrying in %.1fs",
                    self.id,
                    exc.kind,
                    exc.detail,
                    delay,
                )
                self._report_health(False, health)
                await asyncio.sleep(delay)
                self._link.fire(LinkEvent.RETRY)
                continue
            started = time.monotonic()
            self._said = ""
            self._link.fire(LinkEvent.CONNECTED)
            self.connections += 1
            self._mark_all_dirty()  # presence that arrived during setup now counts
            self._report_health(True, f"connected as {self.address}; {len(self._served)} experts")
            log.info(
                "xmpp online source=%s jid=%s mode=%s experts=%d session=%d",
                self.id,
                self.address,
                self.settings.mode,
                len(self._served),
                self.connections,
            )
            reason = await self._until_lost(client)
            self._link.fire(LinkEvent.LOST)
            await self._drop_client()
            self._roster.clear()
            self._mark_all_dirty()  # everyone offline until we know better
            if time.monotonic() - started >= self.settings.stable_after:
                self._backoff.reset()
            delay = self._backoff.next_delay()
            log.warning(
                "xmpp link lost source=%s reason=%s; experts set offline; reconnecting in %.1fs",
                self.id,
                reason,
                delay,
            )
            self._report_health(False, f"link lost ({reason}); retry in {delay:.1f}s")
            await asyncio.sleep(delay)
            self._link.fire(LinkEvent.RETRY)

    async def _until_component_is_ours(self) -> None:
        """Component mode connects only while this node's runtime runs. ejabberd accepts a
        second connection for a component domain and shares the domain's stanzas between the
        two (presence, answers, even ping replies), so an HA standby connected beside the
        active node would take half of its traffic. The standby connects when it takes over;
        the re-subscribe and probes bring every expert's presence within a second or two."""
        if self.settings.mode != "component" or self._port.running:
            return
        self._report_health(False, "standby: the component connects when this node is active")
        log.info("component left to the active node source=%s", self.id)
        while not self._port.running:
            await asyncio.sleep(STANDBY_POLL)

    def _make_client(self) -> ClientXMPP | ComponentXMPP:
        s = self.settings
        client: ClientXMPP | ComponentXMPP
        if s.mode == "component":
            client = Component(s.jid, s.secret, s.host, s.port)
            client.auto_authorize = True
            client.add_event_handler("presence_subscribed", self._on_subscribed)
        else:
            # Without TLS, SCRAM keeps the password off the wire; PLAIN only over loopback.
            loopback = s.host in ("127.0.0.1", "::1", "localhost")
            mechanisms = {"unencrypted_scram": True, "unencrypted_plain": loopback}
            if s.tls_mode == "required":  # no login at all on a stream without TLS
                mechanisms = {"unencrypted_scram": False, "unencrypted_plain": False}
            client = ClientXMPP(s.jid, s.secret, plugin_config={"feature_mechanisms": mechanisms})
            client.enable_direct_tls = False
            client.enable_starttls = s.tls_mode != "off"
            client.enable_plaintext = s.tls_mode != "required"
            if s.ca_file is not None:
                client.ca_certs = Path(s.ca_file)
            client.auto_authorize = True
            client.auto_subscribe = False
        client.register_plugin("xep_0199")  # ping, to find dead links
        client.register_plugin("xep_0030")
        client.add_event_handler("presence", self._on_presence)
        client.add_event_handler("message", self._on_message)
        return client

    async def _connect(self) -> ClientXMPP | ComponentXMPP:
        """One bounded connection attempt: returns a client with a live session or raises."""
        client = self._make_client()
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def succeed(_: Any = None) -> None:
            if not ready.done():
                ready.set_result(None)

        def fail(kind: FailureKind, detail: str) -> Callable[..., None]:
            def handler(event: Any = None) -> None:
                if not ready.done():
                    ready.set_exception(LinkFailed(kind, f"{detail}: {event}" if event else detail))

            return handler

        def auth_failed(event: Any = None) -> None:
            if self.settings.tls_mode == "required" and not _encrypted(client):
                fail("tls_failed", "the server offered no STARTTLS and tls.mode is required")()
            else:
                fail("auth_failed", "authentication refused")(event)

        def untrusted(error: Any = None) -> None:
            where = f"{self.settings.host}:{self.settings.port}"
            trust = self.settings.ca_file or "the system's authorities"
            reason = getattr(error, "verify_message", None) or str(error)
            fail("tls_failed", f"certificate of {where} not trusted ({reason}); trusted: {trust}")()
            client.abort()

        client.add_event_handler("session_start", succeed)
        client.add_event_handler("failed_all_auth", auth_failed)
        client.add_event_handler("ssl_invalid_chain", untrusted)
        client.add_event_handler("connection_failed", fail("not_ready", "cannot connect"))

        def disconnected(event: Any = None) -> None:
            if isinstance(event, ssl.SSLCertVerificationError):
                untrusted(event)  # the TLS handshake refused the server's certificate
            else:
                fail("not_ready", "disconnected during login")(event)

        client.add_event_handler("disconnected", disconnected)
        client.add_event_handler("stream_error", fail("not_ready", "stream error"))
        self._client = client
        client.connect(self.settings.host, self.settings.port)
        try:
            await asyncio.wait_for(ready, self.settings.connect_timeout)
        except TimeoutError:
            await self._drop_client()
            raise LinkFailed(
                "not_ready", f"no session within {self.settings.connect_timeout}s"
            ) from None
        except LinkFailed:
            await self._drop_client()
            raise
        try:
            await self._on_session(client)
        except (TimeoutError, IqError, IqTimeout, ConnectionError) as exc:
            await self._drop_client()
            raise LinkFailed("not_ready", f"session setup failed: {exc!r}") from None
        return client

    async def _on_session(self, client: ClientXMPP | ComponentXMPP) -> None:
        """A fresh session: fetch the roster, subscribe, announce, and let presence flow in."""
        loop = asyncio.get_running_loop()
        self._lost = loop.create_future()
        lost = self._lost

        def on_disconnected(reason: Any = None) -> None:
            if not lost.done():
                lost.set_result(f"disconnected ({reason})" if reason else "disconnected")

        client.add_event_handler("disconnected", on_disconnected)
        if isinstance(client, ClientXMPP):
            await client.get_roster(timeout=self.settings.connect_timeout)
            self._asked.clear()
            self._pace_open_at = 0.0
            await self._sync_subscriptions(client)
            client.send_presence()  # the server now sends us every subscribed contact's presence
            self._converger = asyncio.create_task(
                self._converge(client), name=f"{self.name}:subscriptions"
            )
        else:
            await self._sync_subscriptions(client)

    async def _until_lost(self, client: ClientXMPP | ComponentXMPP) -> str:
        """Wait for a disconnect, pinging the server so a silent dead link is noticed too."""
        assert self._lost is not None
        lost = self._lost
        target = JID(self.settings.jid).domain
        component = self.settings.mode == "component"
        next_ping = time.monotonic() + self.settings.ping_interval
        while True:
            wait = next_ping - time.monotonic()
            if component:
                wait = min(wait, STANDBY_POLL)
            done, _ = await asyncio.wait({lost}, timeout=max(wait, 0.0))
            if done:
                return lost.result()
            if component and not self._port.running:
                return "this node is no longer active: the component is the active node's"
            if time.monotonic() < next_ping:
                continue
            next_ping = time.monotonic() + self.settings.ping_interval
            try:
                await client.plugin["xep_0199"].ping(
                    jid=JID(target),
                    ifrom=JID(self.address) if self.settings.mode == "component" else None,
                    timeout=self.settings.ping_timeout,
                )
            except IqTimeout:
                return f"no ping answer within {self.settings.ping_timeout}s"
            except IqError:
                pass  # an error reply still proves the link is alive

    async def _drop_client(self) -> None:
        converger, self._converger = self._converger, None
        if converger is not None:
            converger.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await converger
        client, self._client = self._client, None
        if client is None:
            return
        client.cancel_connection_attempt()
        with contextlib.suppress(Exception):
            if client.transport is not None:
                client.abort()
        filters = getattr(client, "_run_out_filters", None)
        if filters is not None and not filters.done():
            filters.cancel()

    # -- roster ------------------------------------------------------------------------------

    def _refresh_served(self) -> None:
        served: dict[str, ExpertSpec] = {}
        for expert in self._directory.experts(self.id):
            if expert.im:
                served[bare(expert.im)] = expert
        self._served = served
        self._jid_of = {expert.id: jid for jid, expert in served.items()}

    async def _sync_subscriptions(self, client: ClientXMPP | ComponentXMPP) -> None:
        """Subscribe to every served expert; drop roster entries of experts no longer served.

        Only a node whose runtime runs does this: the two nodes of an HA pair share the
        router's account and roster, and a standby (whose view of the configuration may be
        older) only listens."""
        if not self._port.running:
            log.info("roster left to the active node source=%s", self.id)
            return
        wanted = set(self._served)
        if isinstance(client, ComponentXMPP):
            # No server roster for components: subscribe at every session. A contact already
            # subscribed is answered by its server at once with "subscribed"; Prosody sends
            # the current presence too, ejabberd does not, so each "subscribed" is followed by
            # a probe (_on_subscribed). Never a probe before it: Prosody answers a probe that
            # races a first subscription request with "unsubscribed", which turns the
            # expert's approval into a mere pre-approval.
            for jid in sorted(wanted):
                client.send_presence_subscription(pto=JID(jid), pfrom=JID(self.address))
                client.send_presence(pto=JID(jid), pfrom=JID(self.address))
            return
        roster = client.client_roster
        present = {bare(str(j)): roster[j] for j in roster}
        subscribed = 0
        gate = asyncio.Semaphore(ROSTER_WINDOW)

        async def add(jid: str) -> None:
            async with gate:
                with contextlib.suppress(IqError, IqTimeout):
                    sent = client.update_roster(
                        JID(jid),
                        name=self._served[jid].name,
                        groups=[ROSTER_GROUP],
                        timeout=self.settings.connect_timeout,
                    )
                    if sent is not None:  # None for a component, which keeps no roster
                        await sent

        missing = [
            j
            for j in sorted(wanted)
            if j not in present or ROSTER_GROUP not in present[j]["groups"]
        ]
        await asyncio.gather(*(add(j) for j in missing))  # a window of IQs in flight
        now = time.monotonic()
        for jid in sorted(wanted):
            item = present.get(jid)
            if item is None or item["subscription"] in ("none", "from"):
                if jid in self._asked:
                    continue  # already out this session: the converger re-sends it paced
                self._ask(client, jid, now)
                subscribed += 1
        if subscribed:
            self._pace_open_at = now + self.settings.subscribe_pause
        removed = 0
        for jid, item in present.items():
            if jid not in wanted and ROSTER_GROUP in item["groups"]:
                with contextlib.suppress(IqError, IqTimeout):
                    await client.del_roster_item(JID(jid))
                self._roster.contact_gone(jid)
                removed += 1
        log.info(
            "roster synced source=%s experts=%d subscribe_sent=%d removed=%d",
            self.id,
            len(wanted),
            subscribed,
            removed,
        )

    def _on_subscribed(self, stanza: PresenceStanza) -> None:
        """Component mode: an expert's server says we are subscribed (a first approval, or
        the answer to the re-subscribe of a new session); ask for the current presence, which
        not every server sends with it (RFC 6121 leaves that to the server)."""
        client = self._client
        who = stanza["from"].bare.lower()
        if client is None or who not in self._served:
            return
        client.send_presence(pto=JID(who), ptype="probe", pfrom=JID(self.address))
        log.debug("presence probe sent source=%s to=%s", self.id, who)

    def _ask(self, client: ClientXMPP, jid: str, now: float) -> None:
        requests = self._asked.get(jid, (0, 0.0))[0] + 1
        retry = min(
            self.settings.subscribe_pause * 2 ** (requests - 1), self.settings.subscribe_retry_cap
        )
        self._asked[jid] = (requests, now + retry)
        client.send_presence_subscription(pto=JID(jid))
        self.subscribe_requests += 1

    def _missing(self, client: ClientXMPP) -> list[str]:
        """Served experts whose presence the roster says we are not subscribed to."""
        roster = client.client_roster
        missing = []
        for jid in self._served:
            if not roster.has_jid(jid) or roster[jid]["subscription"] not in ("to", "both"):
                missing.append(jid)
        return sorted(missing)

    async def _converge(self, client: ClientXMPP) -> None:
        """Keep asking, paced, until every served expert's presence is subscribed to.

        The roster is the truth (the server pushes each change): an expert still without a
        ``to`` subscription is asked again when their retry is due (the pause, doubling per
        request, capped), at most ``subscribe_burst`` requests per ``subscribe_pause``, so a
        server's subscription flood limit lets them through instead of dropping them."""
        s = self.settings
        while True:
            await asyncio.sleep(CONVERGE_TICK)
            if not self._port.running:
                continue  # the active node keeps the roster
            now = time.monotonic()
            missing = self._missing(client)
            for jid in list(self._asked):
                if jid not in missing:
                    del self._asked[jid]
            if now >= self._pace_open_at:
                due = [j for j in missing if self._asked.get(j, (0, 0.0))[1] <= now]
                due.sort(key=lambda j: (self._asked.get(j, (0, 0.0))[0], j))
                burst = due[: s.subscribe_burst]
                for jid in burst:
                    self._ask(client, jid, now)
                if burst:
                    self._pace_open_at = now + s.subscribe_pause
                    log.info(
                        "subscription requests re-sent source=%s sent=%d unsubscribed=%d "
                        "next_burst_in=%.0fs",
                        self.id,
                        len(burst),
                        len(missing),
                        s.subscribe_pause,
                    )
            self._set_unsubscribed({j: "asked" if j in self._asked else "queued" for j in missing})

    def _set_unsubscribed(self, unsubscribed: dict[str, str]) -> None:
        before = self.unsubscribed
        self.unsubscribed = unsubscribed
        for reason in ("asked", "queued"):
            UNSUBSCRIBED.labels(source=self.id, reason=reason).set(
                sum(1 for r in unsubscribed.values() if r == reason)
            )
        if unsubscribed.keys() == before.keys() or not self._link.up:
            return
        if unsubscribed:
            asked = sum(1 for r in unsubscribed.values() if r == "asked")
            detail = (
                f"connected as {self.address}; {len(self._served)} experts; "
                f"{len(unsubscribed)} not subscribed ({asked} asked, awaiting approval or "
                f"held by the server's rate limit; {len(unsubscribed) - asked} queued)"
            )
            log.info(
                "presence subscriptions missing source=%s unsubscribed=%d asked=%d queued=%d",
                self.id,
                len(unsubscribed),
                asked,
                len(unsubscribed) - asked,
            )
        else:
            detail = f"connected as {self.address}; {len(self._served)} experts; all subscribed"
            log.info(
                "presence subscriptions complete source=%s experts=%d", self.id, len(self._served)
            )
        self._report_health(True, detail)

    # -- presence ----------------------------------------------------------------------------

    def _on_presence(self, stanza: PresenceStanza) -> None:
        kind = stanza.xml.get("type")
        if kind not in (None, "unavailable"):
            return  # subscription handshakes and errors carry no availability
        sender = stanza["from"]
        who = sender.bare.lower()
        if who == self.address or who not in self._served:
            return
        show = read_show(stanza)
        if show == UNREADABLE:
            log.warning(
                "presence not readable source=%s from=%s; counted away: %s",
                self.id,
                sender,
                str(stanza)[:200],
            )
        self.presence_stanzas += 1
        self.last_presence_at = time.monotonic()
        if self._roster.update(who, sender.resource, show, kind is None) is not None:
            self._mark_dirty(self._served[who].id)

    def resync_presence(self) -> None:
        """The runtime (re)started from the database, which may hold another node's view
        (HA takeover): tell it every expert's presence again."""
        self._mark_all_dirty()
        self._reported.clear()
        self._resynced.set()
        self._version = -1  # the next configuration poll refreshes whom to serve, and the roster

    def _mark_dirty(self, expert_id: str) -> None:
        self._dirty[expert_id] = None
        self._wake.set()

    def _mark_all_dirty(self) -> None:
        for expert in self._served.values():
            self._dirty[expert.id] = None
        for expert_id in list(self._reported):
            self._dirty[expert_id] = None
        self._wake.set()

    def presence_of(self, expert_id: str) -> Presence:
        """What this source currently makes of an expert (offline while the link is down)."""
        jid = self._jid_of.get(expert_id)
        if not self._link.up or jid is None:
            return Presence.OFFLINE
        return self._roster.aggregate(jid)

    async def _presence_worker(self) -> None:
        """Tell the runtime about changes: one call per expert per burst, a burst's calls in
        flight together (the runtime commits them in one transaction), bursts in order.
        Calls the runtime could not take (not running yet, standby, database trouble) are
        retried with capped backoff, so the runtime ends up with what the server says."""
        retry = Backoff(initial=0.5, cap=10.0)
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._dirty = list(self._dirty), {}
            changes = [(e, self.presence_of(e)) for e in batch]
            changes = [(e, s) for e, s in changes if self._reported.get(e) != s]
            if not changes:
                continue
            if not self._port.running:
                # An HA standby (or a runtime not started yet): keep the changes until the
                # runtime starts; its start asks for a resync. Nothing to warn about.
                for expert_id, _ in changes:
                    self._dirty.setdefault(expert_id, None)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._resynced.wait(), timeout=STANDBY_RECHECK)
                self._resynced.clear()
                self._wake.set()
                continue
            told = await asyncio.gather(*(self._tell(e, s) for e, s in changes))
            failed = [e for (e, _), ok in zip(changes, told, strict=True) if not ok]
            if not failed:
                retry.reset()
                continue
            delay = retry.next_delay()
            log.warning(
                "presence not applied source=%s experts=%d; retrying in %.1fs",
                self.id,
                len(failed),
                delay,
            )
            with contextlib.suppress(TimeoutError):  # a resync means: try again now
                await asyncio.wait_for(self._resynced.wait(), timeout=delay)
            self._resynced.clear()
            for expert_id in failed:
                self._dirty.setdefault(expert_id, None)
            self._wake.set()

    async def _tell(self, expert_id: str, status: Presence) -> bool:
        """True when done (or pointless to retry: the runtime does not know the expert)."""
        try:
            await self._port.async_set_presence(expert_id, status, self.id)
        except (NotFound, InvalidInput) as exc:
            log.info(
                "presence dropped source=%s expert=%s status=%s reason=%s",
                self.id,
                expert_id,
                status,
                exc.message,
            )
            self._reported.pop(expert_id, None)
            return True
        except Exception as exc:
            log.debug("presence call failed source=%s expert=%s error=%r", self.id, expert_id, exc)
            return False
        before = self._reported.get(expert_id)
        self._reported[expert_id] = status
        if expert_id not in self._jid_of:
            self._reported.pop(expert_id, None)  # no longer ours: forget after telling
        log.info(
            "presence source=%s expert=%s status=%s previous=%s link=%s",
            self.id,
            expert_id,
            status,
            before or "unknown",
            self._link.state,
        )
        return True

    # -- answers -----------------------------------------------------------------------------

    async def _on_message(self, msg: Message) -> None:
        if msg["type"] not in ("chat", "normal"):
            return
        body = msg["body"]
        if not body:
            return  # chat states, receipts
        sender = msg["from"].bare.lower()
        expert = self._served.get(sender)
        if expert is None or expert.im is None or bare(expert.im) != sender:
            log.info("im ignored source=%s from=%s reason=not-an-expert", self.id, sender)
            return
        if not self._port.running:
            # The standby of an HA pair: the server may hand it a copy of an answer sent to
            # the router's bare JID; the active node's session answers it.
            log.info("im ignored source=%s from=%s reason=runtime-not-running", self.id, sender)
            return
        known = self._port.expert(expert.id)
        if known is None:
            return
        messages = self._directory.messages(known.locale)
        reply = parse_reply(body)
        offers = self._port.open_offers(known.id)
        open_ids = {o.id for o in offers}
        offers += [
            replace(o, status="closed")
            for o in self._sent.get(known.id, {}).values()
            if o.id not in open_ids
        ]
        decision = decide(
            reply,
            offers,
            messages,
            presence=self.presence_of(known.id),
            tasks=self._tasks_of(known.id),
        )
        unclear = isinstance(decision, Say) and isinstance(reply, Unclear)
        if unclear and not self._budget.allow(sender, time.monotonic()):
            log.info(
                "im reply held back source=%s expert=%s reason=reply-budget", self.id, known.id
            )
            return
        if isinstance(decision, Say):
            log.info(
                "im answer source=%s expert=%s reply=%s decision=say",
                self.id,
                known.id,
                type(reply).__name__,
            )
            self._send(sender, decision.text, "reply")
            return
        if isinstance(decision, Accept):
            result = await self._port.async_accept(decision.offer_id, decision.phone)
        else:
            assert isinstance(decision, Decline)
            result = await self._port.async_decline(decision.offer_id)
        log.info(
            "im answer source=%s expert=%s decision=%s offer=%s ok=%s reason=%s",
            self.id,
            known.id,
            type(decision).__name__.lower(),
            decision.offer_id,
            result.ok,
            result.reason or "-",
        )
        line = answer_outcome(decision, result, messages)
        if line:
            self._send(sender, line, "answer-outcome")

    def _tasks_of(self, expert_id: str) -> int | str:
        with contextlib.suppress(Exception):
            state = self._port.expert_state(expert_id)
            if state is not None:
                return len(state.get("active_tasks") or [])
        return "unknown"

    # -- health ------------------------------------------------------------------------------

    def _report_health(self, up: bool, detail: str) -> None:
        if self._health is not None:
            self._health.report(f"presence:{self.id}", up, detail, self._health_required)
