"""Component mode: current presence after a (re)connect and after a takeover, on Prosody and
ejabberd, and the Prosody race that a probe sent too early would revive."""

from __future__ import annotations

import time

from support.wait import async_eventually
from support.xmpp_clients import Lab


def _component(lab: Lab) -> dict[str, object]:
    return {
        "mode": "component",
        "jid": lab.server.component,
        "secret": lab.server.component_secret,
        "port": lab.server.component_port,
    }


async def test_a_taking_over_component_shows_every_online_expert_within_5_s(lab: Lab) -> None:
    experts = ["ann", "ben", "cid"]
    for expert in experts:
        lab.add_expert(expert)
    await lab.sign_in("ann")
    await lab.sign_in("ben", show="away")
    await lab.sign_in("cid")
    first = await lab.source(**_component(lab))
    await async_eventually(
        lambda: [lab.port.presence.get(e) for e in experts] == ["available", "away", "available"],
        timeout=10,
    )
    await first.async_stop()  # the active node is gone; nobody changes presence meanwhile
    lab.port.presence.clear()
    second = await lab.source(**_component(lab))
    await async_eventually(lambda: second.up, timeout=10)
    took_over = time.monotonic()
    await async_eventually(
        lambda: [lab.port.presence.get(e) for e in experts] == ["available", "away", "available"],
        timeout=5,
    )
    assert time.monotonic() - took_over < 5


async def test_a_first_subscription_stays_a_subscription(lab: Lab) -> None:
    """Prosody answers a probe that races a first subscription request with ``unsubscribed``
    (the expert has not approved yet: here they are not even signed in); the source probes
    only once the expert has approved, so the request stays pending, the approval is a
    subscription and later changes keep arriving."""
    lab.add_expert("dee")
    source = await lab.source(**_component(lab))
    await async_eventually(lambda: source.up, timeout=10)
    await async_eventually(lambda: lab.port.presence.get("dee") == "offline", timeout=5)
    dee = await lab.sign_in("dee")  # the pending request reaches the client, which approves
    await async_eventually(lambda: lab.port.presence.get("dee") == "available", timeout=10)
    for show, expected in (("dnd", "dnd"), ("away", "away"), (None, "available")):
        dee.set_show(show)
        await async_eventually(lambda e=expected: lab.port.presence.get("dee") == e, timeout=5)  # type: ignore[misc]
    assert dee.client is not None
    item = dee.client.client_roster[source.address]
    assert item["subscription"] in ("from", "both")


async def test_a_component_connects_only_while_its_node_is_active(lab: Lab) -> None:
    """ejabberd would share the component's stanzas between two connections: a standby's
    component stays away until its node takes over, and leaves when the node stops being
    active."""
    lab.add_expert("eve")
    await lab.sign_in("eve")
    lab.port.running = False  # a standby
    source = await lab.source(**_component(lab))
    await async_eventually(
        lambda: "standby" in source.health.components()[0].detail,  # type: ignore[attr-defined]
        timeout=5,
    )
    assert not source.up and source.connections == 0
    lab.port.running = True  # it takes over; its runtime's start asks for a resync
    source.resync_presence()
    await async_eventually(lambda: lab.port.presence.get("eve") == "available", timeout=5)
    assert source.connections == 1
    lab.port.running = False  # and hands over again
    await async_eventually(lambda: not source.up, timeout=5)
