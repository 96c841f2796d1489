"""The XMPP presence source and IM offer channel (slixmpp), account or component mode.

One ``XmppSource`` is one link to one XMPP server. It

- logs in (account mode: a normal user, TLS as configured; component mode: XEP-0114, only
  while its node is the active one), keeps the roster in step with the experts it serves
  (subscribe to added ones, remove dropped ones from its ``expertline`` roster group), re-sends
  unanswered subscription requests paced under a server's flood limit until the roster shows
  every subscription, and resyncs presence after every (re)connect (component mode: a probe
  to every expert, a subscription request only where the answer says none, and a probe after
  each ``subscribed``, as not every server sends presence with it);
- maps each expert's resources through the ``status_map`` (most available resource wins) and
  tells the runtime through ``RoutingPort.async_set_presence``; one worker does the telling, in
  order, coalescing bursts, so a presence storm costs one call per expert, not per stanza;
- while the link is down, tells the runtime that its experts are offline (no new offers; open
  ones are withdrawn by the core) and reports ``presence:<id>`` down to ``Health``;
- reconnects with capped exponential backoff (``link.Backoff``), detecting dead links with
  XEP-0199 pings;
- carries offer texts out and answers in (``protocol``); an answer counts only from the bare
  JID the offers went to.

The parts live by job: the link (supervision, connection, session, presence in) here; the
roster and subscriptions in ``xmpp_roster``; offers over IM in ``xmpp_im``; settings, the
component class, failures and the state the parts share in ``xmpp_stream``. The names other
modules import from here (``XmppSource``, ``XmppSettings``, ``UNSUBSCRIBED``...) stay here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from slixmpp import JID, ClientXMPP, ComponentXMPP
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.stanza import Presence as PresenceStanza

from expertline.errors import InvalidInput, NotFound
from expertline.health import Health
from expertline.presence.link import Backoff, Link, LinkEvent
from expertline.presence.mapping import RosterPresence
from expertline.presence.protocol import ReplyBudget
from expertline.presence.xmpp_im import RECENT_OFFERS, ImChannel
from expertline.presence.xmpp_roster import (
    CONVERGE_TICK,
    ROSTER_GROUP,
    ROSTER_WINDOW,
    UNSUBSCRIBED,
    RosterKeeper,
)
from expertline.presence.xmpp_stream import (
    UNREADABLE,
    Component,
    Directory,
    FailureKind,
    LinkFailed,
    XmppSettings,
    _encrypted,
    bare,
    read_show,
)
from expertline.routing.model import ExpertSpec, Presence
from expertline.runtime.ports import OfferView, RoutingPort

__all__ = [
    "CONVERGE_TICK",
    "RECENT_OFFERS",
    "ROSTER_GROUP",
    "ROSTER_WINDOW",
    "UNSUBSCRIBED",
    "Component",
    "Directory",
    "LinkFailed",
    "XmppSettings",
    "XmppSource",
    "_encrypted",
    "bare",
    "read_show",
]

log = logging.getLogger("expertline.presence.xmpp")

STANDBY_RECHECK = 10.0  # seconds between looks at a runtime that is not running
STANDBY_POLL = 0.2  # component mode: seconds between looks at whether this node is active


def raise_if_cancelling() -> None:
    """Honour a cancel that was swallowed: on Python 3.11 ``asyncio.wait_for`` can lose a
    cancel that arrives as the awaited future completes (a connection refused at the moment
    the source is stopped); the task still counts it (``Task.cancelling``), so a supervisor
    that checks stops instead of retrying forever and leaving ``async_stop`` waiting."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class XmppSource(RosterKeeper, ImChannel):
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
        self._confirmed: set[str] = set()  # component mode: subscribed, said by the server
        self.subscribe_requests = 0  # subscription requests sent (tests read it)
        self.unsubscribed: dict[str, str] = {}  # bare jid -> reason (asked | queued)
        self.connections = 0  # successful sessions so far (tests and metrics read it)
        self.failed_attempts = 0
        self._said = ""  # the TLS failure last logged at ERROR
        self.presence_stanzas = 0  # availability stanzas received (benchmarks read it)
        self.last_presence_at = 0.0  # time.monotonic() of the last one

    # -- lifecycle ---------------------------------------------------------------------------

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

    # -- link supervision --------------------------------------------------------------------

    async def _supervise(self) -> None:
        """Connect, serve, and after any failure wait (capped backoff) and connect again."""
        self._link.fire(LinkEvent.START)
        while True:
            raise_if_cancelling()
            await self._until_component_is_ours()
            try:
                client = await self._connect()
            except LinkFailed as exc:
                raise_if_cancelling()  # a stop that came as the attempt failed ends here
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
        its probes bring every expert's presence within a second or two."""
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
            client.add_event_handler("presence_unsubscribed", self._on_unsubscribed)
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
        self._asked.clear()
        self._pace_open_at = 0.0
        if isinstance(client, ClientXMPP):
            await client.get_roster(timeout=self.settings.connect_timeout)
            await self._sync_subscriptions(client)
            client.send_presence()  # the server now sends us every subscribed contact's presence
        else:
            self._confirmed.clear()  # a component probes every expert at every session
            await self._sync_subscriptions(client)
        # A server's flood limit drops requests beyond it (ejabberd's mod_pres_counter counts a
        # component's too): the converger asks again, paced, until every expert is subscribed
        # (for a component it also sends the first requests, once the probes had their answer).
        self._converger = asyncio.create_task(
            self._converge(client), name=f"{self.name}:subscriptions"
        )

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

    # -- presence ----------------------------------------------------------------------------

    def _on_presence(self, stanza: PresenceStanza) -> None:
        kind = stanza.xml.get("type")
        if kind not in (None, "unavailable"):
            return  # subscription handshakes and errors carry no availability
        sender = stanza["from"]
        who = sender.bare.lower()
        if who == self.address or who not in self._served:
            return
        self._confirmed.add(who)  # their server sends us presence: we are subscribed
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
