"""Scripted expert IM clients (slixmpp) for tests and the XMPP benchmark.

An ``ExpertClient`` signs in as one expert on one device (resource), accepts the router's
subscription request, keeps every chat line it receives, and can answer offers on its own
(``behaviour``: accept after a delay, decline, ignore, accept with another phone number).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from slixmpp import JID, ClientXMPP
from slixmpp.stanza import Message

from expertline.health import Health
from expertline.presence.mapping import StatusMap
from expertline.presence.protocol import MessageSet
from expertline.presence.xmpp import XmppSettings, XmppSource
from expertline.routing.model import ExpertSpec, Presence
from expertline.runtime.ports import AnswerResult, OfferView
from support.ejabberd import EjabberdServer
from support.prosody import ProsodyServer

XmppServer = ProsodyServer | EjabberdServer  # the servers the tests run on
Behaviour = Literal["accept", "decline", "ignore"]
OFFER = re.compile(r"^Offer #(\w+):")


@dataclass
class Received:
    body: str
    sender: str
    at: float  # time.perf_counter() on arrival


@dataclass
class ExpertClient:
    jid: str
    password: str
    host: str
    port: int
    resource: str = "desk"
    behaviour: Behaviour = "ignore"
    answer_after: float = 0.0
    phone: str | None = None  # accept asking for the call on this number
    show: str | None = None  # initial <show/>; None = plain online
    priority: int = 0
    received: list[Received] = field(default_factory=list)
    client: ClientXMPP | None = None
    _inbox: asyncio.Queue[Received] = field(default_factory=asyncio.Queue)

    async def connect(self, timeout: float = 10.0) -> None:
        client = ClientXMPP(
            f"{self.jid}/{self.resource}",
            self.password,
            plugin_config={
                "feature_mechanisms": {"unencrypted_plain": True, "unencrypted_scram": True}
            },
        )
        client.enable_direct_tls = False
        client.enable_starttls = False
        client.enable_plaintext = True
        client.auto_authorize = True
        client.auto_subscribe = False
        started: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def on_start(_: object) -> None:
            await client.get_roster(timeout=timeout)
            self._announce(client)
            if not started.done():
                started.set_result(None)

        def on_fail(event: object) -> None:
            if not started.done():
                started.set_exception(ConnectionError(f"{self.jid} could not sign in: {event}"))

        client.add_event_handler("session_start", on_start)
        client.add_event_handler("failed_all_auth", on_fail)
        client.add_event_handler("connection_failed", on_fail)
        client.add_event_handler("message", self._on_message)
        self.client = client
        client.connect(self.host, self.port)
        await asyncio.wait_for(started, timeout)

    def _announce(self, client: ClientXMPP) -> None:
        client.send_presence(pshow=self.show, ppriority=self.priority)

    def set_show(self, show: str | None) -> None:
        """Change this device's presence: None = online, or chat/away/xa/dnd."""
        self.show = show
        assert self.client is not None
        self._announce(self.client)

    def say(self, to: str, text: str) -> None:
        assert self.client is not None
        self.client.send_message(mto=JID(to), mbody=text, mtype="chat")

    async def disconnect(self) -> None:
        client, self.client = self.client, None
        if client is None:
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.disconnect(wait=1.0), 3.0)
        client.cancel_connection_attempt()
        with contextlib.suppress(Exception):
            client.abort()

    async def _on_message(self, msg: Message) -> None:
        if msg["type"] not in ("chat", "normal") or not msg["body"]:
            return
        item = Received(str(msg["body"]), msg["from"].bare, time.perf_counter())
        self.received.append(item)
        self._inbox.put_nowait(item)
        match = OFFER.match(item.body)
        if match is None or self.behaviour == "ignore" or "no reply needed" in item.body:
            return
        code = match.group(1)
        if self.answer_after:
            await asyncio.sleep(self.answer_after)
        if self.behaviour == "accept":
            self.say(item.sender, f"yes {code} {self.phone}" if self.phone else f"yes {code}")
        else:
            self.say(item.sender, f"no #{code}")

    async def next_message(self, timeout: float = 10.0) -> Received:
        return await asyncio.wait_for(self._inbox.get(), timeout)

    async def wait_for(self, pattern: str, timeout: float = 10.0) -> Received:
        """The first line (already received or arriving) matching ``pattern``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for item in self.received[seen:]:
                if regex.search(item.body):
                    return item
            seen = len(self.received)
            left = deadline - time.monotonic()
            if left <= 0:
                bodies = [r.body for r in self.received]
                raise AssertionError(f"{self.jid} got no line matching {pattern!r}; got {bodies}")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._inbox.get(), left)

    def bodies(self) -> list[str]:
        return [r.body for r in self.received]


# -- a lab for adapter tests: a fake runtime port over a real server ----------------------


@dataclass
class FakePort:
    """A ``RoutingPort`` that records what the adapter tells it and answers from a script."""

    experts: dict[str, ExpertSpec]
    presence: dict[str, Presence] = field(default_factory=dict)
    history: list[tuple[str, Presence]] = field(default_factory=list)
    offers: dict[str, OfferView] = field(default_factory=dict)
    answers: list[tuple[str, str, str | None]] = field(default_factory=list)
    version: int = 1

    refuse_presence: int = 0  # this many calls fail first (a runtime not running yet)
    running: bool = True  # False: the standby of an HA pair

    async def async_set_presence(self, expert_id: str, status: Presence, source: str) -> None:
        if self.refuse_presence > 0:
            self.refuse_presence -= 1
            raise RuntimeError("the routing runtime is not running on this node")
        self.presence[expert_id] = status
        self.history.append((expert_id, status))

    async def async_accept(self, offer_id: str, phone: str | None = None) -> AnswerResult:
        return self._answer(offer_id, "accept", phone)

    async def async_decline(self, offer_id: str) -> AnswerResult:
        return self._answer(offer_id, "decline", None)

    def _answer(self, offer_id: str, what: str, phone: str | None) -> AnswerResult:
        self.answers.append((offer_id, what, phone))
        offer = self.offers.get(offer_id)
        if offer is None or offer.status != "open":
            return AnswerResult(False, offer, "closed")
        self.offers[offer_id] = replace(
            offer, status="accepted" if what == "accept" else "declined"
        )
        return AnswerResult(True, self.offers[offer_id])

    def open_offers(self, expert_id: str) -> list[OfferView]:
        return [o for o in self.offers.values() if o.expert_id == expert_id and o.status == "open"]

    def expert(self, expert_id: str) -> ExpertSpec | None:
        return self.experts.get(expert_id)

    def expert_by_im(self, address: str) -> ExpertSpec | None:
        return next((e for e in self.experts.values() if e.im == address.lower()), None)

    @property
    def config(self) -> object:
        return type("Cfg", (), {"version": self.version})()


@dataclass
class FakeDirectory:
    port: FakePort
    show: dict[str, dict[str, str]] = field(default_factory=dict)

    def experts(self, source_id: str) -> Sequence[ExpertSpec]:
        return [e for e in self.port.experts.values() if e.im]

    def messages(self, locale: str) -> MessageSet:
        return MessageSet.build(locale)

    def show_rules(self, queue_id: str) -> Mapping[str, str]:
        return self.show.get(queue_id, {})

    def version(self) -> int:
        return self.port.version


_codes = itertools.count(4000)


def make_offer(expert_id: str, port: FakePort, **kw: object) -> OfferView:
    code = str(next(_codes))
    now = time.time()
    offer = OfferView(
        id=f"o{code}",
        task_id=f"t{code}",
        code=code,
        expert_id=expert_id,
        status="open",
        queue_id="billing",
        queue_name="Billing",
        caller="+15551230000",
        created_at=now,
        expires_at=now + 20,
        task_created_at=now - 3,
        notice_only=False,
    )
    offer = replace(offer, **kw)  # type: ignore[arg-type]
    port.offers[offer.id] = offer
    return offer


@dataclass
class Lab:
    """A server (Prosody or ejabberd), a router source on it, and helpers to sign experts in."""

    server: XmppServer
    port: FakePort
    directory: FakeDirectory
    clients: list[ExpertClient] = field(default_factory=list)
    sources: list[XmppSource] = field(default_factory=list)

    def settings(self, **kw: object) -> XmppSettings:
        base = XmppSettings(
            id="corp",
            mode="account",
            jid=f"router@{self.server.domain}",
            secret="router-pw",
            host="127.0.0.1",
            port=self.server.c2s_port,
            status_map=StatusMap.parse(None),
            connect_timeout=5.0,
            ping_interval=1.0,
            ping_timeout=1.0,
            backoff_initial=0.2,
            backoff_cap=1.0,
            config_poll=0.1,
        )
        return replace(base, **kw)  # type: ignore[arg-type]

    def add_expert(self, expert_id: str, **kw: object) -> ExpertSpec:
        password = f"{expert_id}-pw"
        self.server.register(expert_id, password)
        spec = ExpertSpec(
            id=expert_id,
            name=expert_id.title(),
            phone=f"sip:{expert_id}@pbx.example.test",
            im=f"{expert_id}@{self.server.domain}",
            **kw,  # type: ignore[arg-type]
        )
        self.port.experts[expert_id] = spec
        return spec

    async def sign_in(self, expert_id: str, **kw: object) -> ExpertClient:
        client = ExpertClient(
            jid=f"{expert_id}@{self.server.domain}",
            password=f"{expert_id}-pw",
            host="127.0.0.1",
            port=self.server.c2s_port,
            **kw,  # type: ignore[arg-type]
        )
        await client.connect()
        self.clients.append(client)
        return client

    async def source(self, **kw: object) -> XmppSource:
        health = Health()
        src = XmppSource(self.settings(**kw), self.port, self.directory, health)  # type: ignore[arg-type]
        src.health = health  # type: ignore[attr-defined]
        await src.async_start()
        self.sources.append(src)
        return src


@contextlib.asynccontextmanager
async def lab_on(server: XmppServer) -> AsyncIterator[Lab]:
    """A lab on ``server`` with an empty port; afterwards its sources are stopped and its
    experts signed out."""
    port = FakePort({})
    lab = Lab(server, port, FakeDirectory(port))
    try:
        yield lab
    finally:
        for src in lab.sources:
            await src.async_stop()
        await asyncio.gather(*(client.disconnect() for client in lab.clients))
