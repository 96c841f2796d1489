"""Redundant presence links: one source over two servers (ejabberd and Prosody, the same
domain, as two nodes of one service would be). Killing one server loses no expert's
availability and no offer."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from expertline.health import Health
from expertline.presence.redundant import LinkPort, RedundantSource
from expertline.presence.xmpp import XmppSource
from expertline.routing.model import ExpertSpec
from support.ejabberd import EjabberdServer, ejabberd_available
from support.prosody import ProsodyServer, prosody_available
from support.wait import async_eventually
from support.xmpp_clients import ExpertClient, FakeDirectory, FakePort, Lab, XmppServer, make_offer

pytestmark = [pytest.mark.ejabberd, pytest.mark.prosody]


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[EjabberdServer, ProsodyServer]]:
    if not (ejabberd_available() and prosody_available()):
        pytest.skip("needs ejabberd and prosody")
    with (
        EjabberdServer(tmp_path / "ejabberd").started() as first,
        ProsodyServer(tmp_path / "prosody").started() as second,
    ):
        for server in (first, second):
            server.register("router", "router-pw")
            server.register("alice", "alice-pw")
        yield first, second


async def _client(server: XmppServer, resource: str) -> ExpertClient:
    client = ExpertClient(
        "alice@example.test", "alice-pw", "127.0.0.1", server.c2s_port, resource=resource
    )
    await client.connect()
    return client


async def test_killing_one_of_two_links_loses_no_presence_and_no_offer(
    servers: tuple[EjabberdServer, ProsodyServer],
) -> None:
    first, second = servers
    port = FakePort({"alice": ExpertSpec("alice", "Alice", "sip:1@pbx", im="alice@example.test")})
    health = Health()
    source = RedundantSource("corp", port, [], health, links_later=True)
    lab = Lab(first, port, FakeDirectory(port))
    base = lab.settings()
    source.links = [
        XmppSource(
            replace(base, id=f"corp/{n + 1}", port=server.c2s_port),
            LinkPort(source, n),  # type: ignore[arg-type]
            FakeDirectory(port),
            health,
            health_required=False,
        )
        for n, server in enumerate((first, second))
    ]
    source.reset_views()
    on_first = await _client(first, "desk")
    on_second = await _client(second, "desk")
    await source.async_start()
    try:
        await async_eventually(lambda: all(link.up for link in source.links), timeout=15)
        await async_eventually(lambda: port.presence.get("alice") == "available", timeout=15)
        offer = make_offer("alice", port)
        await source.async_offer(offer)
        await on_first.wait_for(rf"^Offer #{offer.code}")  # the first live link carries it
        first.kill()  # the server host dies
        await async_eventually(lambda: not source.links[0].up, timeout=10)
        # The open offer goes out again over the live link, and is answered there.
        await on_second.wait_for(rf"^Offer #{offer.code}", timeout=10)
        on_second.say(source.links[1].address, f"yes {offer.code}")
        await async_eventually(lambda: port.answers == [(offer.id, "accept", None)], timeout=10)
        later = make_offer("alice", port)
        await source.async_offer(later)
        await on_second.wait_for(rf"^Offer #{later.code}")
        # Availability never dropped, and the source stayed up.
        assert [s for e, s in port.history if e == "alice"] == ["available"]
        assert source.up and health.ready()
        status = {c.name: c for c in health.components()}
        assert status["presence:corp"].up and "1 of 2 links up" in status["presence:corp"].detail
        assert not status["presence:corp/1"].up and not status["presence:corp/1"].required
        on_second.set_show("away")  # the live link still tells changes
        await async_eventually(lambda: port.presence.get("alice") == "away", timeout=10)
    finally:
        await source.async_stop()
        for client in (on_first, on_second):
            await client.disconnect()
