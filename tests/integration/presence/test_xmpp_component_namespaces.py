"""Component stanzas in either namespace, over a real XEP-0114 socket.

jabberd2 delivers a component's stanzas with ``xmlns='jabber:client'`` on each stanza (its
router speaks ``jabber:component:accept`` only on the stream). jabberd2 is not in Debian's
current release, so a small scripted peer plays the server's side of XEP-0114 here: it
accepts the handshake and then sends stanzas written the way jabberd2 sends them; everything
from the stream parser up is the real adapter."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from expertline.health import Health
from expertline.net import free_port
from expertline.presence.mapping import StatusMap
from expertline.presence.xmpp import XmppSettings, XmppSource
from expertline.routing.model import ExpertSpec
from support.wait import async_eventually
from support.xmpp_clients import FakeDirectory, FakePort, make_offer

COMPONENT = "expertline.example.test"
SECRET = "component-secret"
STREAM_ID = "3b1f9c2a"


@dataclass
class ScriptedComponentServer:
    """The server's side of XEP-0114 for one component connection."""

    port: int = field(default_factory=free_port)
    received: str = ""
    writer: asyncio.StreamWriter | None = None
    server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        header = await reader.readuntil(b">")
        while b"stream:stream" not in header:
            header = await reader.readuntil(b">")
        writer.write(
            b"<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams'"
            b" xmlns='jabber:component:accept' id='"
            + STREAM_ID.encode()
            + b"' from='"
            + COMPONENT.encode()
            + b"'>"
        )
        shake = (await reader.readuntil(b"</handshake>")).decode()
        digest = re.search(r"<handshake[^>]*>([0-9a-f]+)</handshake>", shake)
        expected = hashlib.sha1((STREAM_ID + SECRET).encode()).hexdigest()
        if digest is None or digest.group(1) != expected:
            writer.write(b"<stream:error><not-authorized/></stream:error></stream:stream>")
            writer.close()
            return
        writer.write(b"<handshake/>")
        self.writer = writer
        while data := await reader.read(65536):
            self.received += data.decode()
            for iq in re.finditer(r"<iq [^>]*>", data.decode()):  # answer pings
                tag = iq.group(0)
                ident = re.search(r"id=[\"']([^\"']+)", tag)
                if "get" in tag and ident is not None:
                    writer.write(
                        f"<iq xmlns='jabber:client' type='result' id='{ident.group(1)}'"
                        f" from='example.test' to='{COMPONENT}'/>".encode()
                    )

    def send(self, stanza: str) -> None:
        assert self.writer is not None
        self.writer.write(stanza.encode())


@pytest.fixture
async def jabberd2() -> AsyncIterator[ScriptedComponentServer]:
    server = ScriptedComponentServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def source(jabberd2: ScriptedComponentServer) -> AsyncIterator[tuple[XmppSource, FakePort]]:
    port = FakePort(
        {
            e: ExpertSpec(e, e.title(), f"sip:{e}@pbx.example.test", im=f"{e}@example.test")
            for e in ("alice", "bob", "carol")
        }
    )
    settings = XmppSettings(
        id="corp",
        mode="component",
        jid=COMPONENT,
        secret=SECRET,
        host="127.0.0.1",
        port=jabberd2.port,
        status_map=StatusMap.parse(None),
        connect_timeout=5.0,
        ping_interval=30.0,
        config_poll=0.1,
    )
    src = XmppSource(settings, port, FakeDirectory(port), Health())
    await src.async_start()
    try:
        await async_eventually(lambda: src.up, timeout=10)
        yield src, port
    finally:
        await src.async_stop()


def presence(who: str, body: str = "", ns: str = "jabber:client") -> str:
    return (
        f"<presence xmlns='{ns}' from='{who}@example.test/desk' to='{COMPONENT}'>{body}</presence>"
    )


async def test_shows_in_the_client_namespace_are_read(
    jabberd2: ScriptedComponentServer, source: tuple[XmppSource, FakePort]
) -> None:
    _, port = source
    await async_eventually(lambda: "subscribe" in jabberd2.received, timeout=5)
    jabberd2.send(presence("alice", "<show>dnd</show><priority>5</priority>"))
    jabberd2.send(presence("bob", "<priority>5</priority>"))
    jabberd2.send(presence("carol", "<show>xa</show>", ns="jabber:component:accept"))
    await async_eventually(
        lambda: port.presence == {"alice": "dnd", "bob": "available", "carol": "away"},
        timeout=5,
    )


async def test_answers_in_the_client_namespace_are_read(
    jabberd2: ScriptedComponentServer, source: tuple[XmppSource, FakePort]
) -> None:
    src, port = source
    jabberd2.send(presence("alice"))
    await async_eventually(lambda: port.presence.get("alice") == "available", timeout=5)
    offer = make_offer("alice", port)
    await src.async_offer(offer)
    await async_eventually(lambda: f"Offer #{offer.code}" in jabberd2.received, timeout=5)
    jabberd2.send(
        f"<message xmlns='jabber:client' type='chat' from='alice@example.test/desk'"
        f" to='{COMPONENT}'><body>yes {offer.code}</body>"
        "<active xmlns='http://jabber.org/protocol/chatstates'/></message>"
    )
    await async_eventually(lambda: port.answers == [(offer.id, "accept", None)], timeout=5)


async def test_a_show_that_cannot_be_read_never_counts_as_available(
    jabberd2: ScriptedComponentServer,
    source: tuple[XmppSource, FakePort],
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, port = source
    jabberd2.send(presence("alice"))
    await async_eventually(lambda: port.presence.get("alice") == "available", timeout=5)
    # a <show/> in a namespace no server should use: not read as "no show" (available)
    jabberd2.send(presence("alice", "<show xmlns='urn:example:odd'>dnd</show>"))
    await async_eventually(lambda: port.presence.get("alice") == "away", timeout=5)
    assert any("presence not readable" in r.getMessage() for r in caplog.records)
