"""Subscriptions converge under a server's subscription flood limit (ejabberd's
``mod_pres_counter``: by default 5 requests a minute, the rest silently dropped)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from expertline.presence.xmpp import UNSUBSCRIBED
from support.ejabberd import EjabberdServer, ejabberd_with_router
from support.wait import async_eventually
from support.xmpp_clients import Lab, lab_on

pytestmark = pytest.mark.ejabberd


@pytest.fixture
def shipped(tmp_path: Path) -> Iterator[EjabberdServer]:
    """ejabberd exactly as Debian ships it (mod_pres_counter: count 5, interval 60)."""
    yield from ejabberd_with_router(tmp_path / "ejabberd")


@pytest.fixture
def fast_limit(tmp_path: Path) -> Iterator[EjabberdServer]:
    """The same limit, 5 requests, over a 2 s window instead of a minute."""
    yield from ejabberd_with_router(
        tmp_path / "ejabberd",
        overrides={"modules": {"mod_pres_counter": {"count": 5, "interval": 2}}},
    )


@pytest.fixture
async def shipped_lab(shipped: EjabberdServer) -> AsyncIterator[Lab]:
    async with lab_on(shipped) as lab:
        yield lab


@pytest.fixture
async def fast_lab(fast_limit: EjabberdServer) -> AsyncIterator[Lab]:
    async with lab_on(fast_limit) as lab:
        yield lab


def _gauge(source: str, reason: str) -> float:
    return UNSUBSCRIBED.labels(source=source, reason=reason)._value.get()  # type: ignore[attr-defined]


@pytest.mark.timeout(240)
async def test_shipped_defaults_every_expert_becomes_available_without_a_reconnect(
    shipped_lab: Lab,
) -> None:
    lab = shipped_lab
    assert lab.server.pres_counter == {"count": 5, "interval": 60}  # type: ignore[union-attr]
    experts = [f"e{i}" for i in range(8)]
    for expert in experts:
        lab.add_expert(expert)
        await lab.sign_in(expert)
    started = time.monotonic()
    source = await lab.source()
    await async_eventually(lambda: len(lab.port.presence) == len(experts), timeout=10)
    # The server let 5 requests through and dropped the rest; the source says so.
    await async_eventually(lambda: len(source.unsubscribed) == 3, timeout=10)
    assert _gauge("corp", "asked") == 3
    detail = source.health.components()[0].detail  # type: ignore[attr-defined]
    assert "3 not subscribed (3 asked" in detail
    await async_eventually(
        lambda: all(lab.port.presence.get(e) == "available" for e in experts), timeout=120
    )
    elapsed = time.monotonic() - started
    assert elapsed < 120, elapsed
    assert source.connections == 1  # no reconnect
    await async_eventually(lambda: source.unsubscribed == {}, timeout=5)
    assert _gauge("corp", "asked") == 0 and _gauge("corp", "queued") == 0
    assert "all subscribed" in source.health.components()[0].detail  # type: ignore[attr-defined]
    roster = {i["jid"]: i["subscription"] for i in lab.server.roster_of("router")}
    assert roster == {f"{e}@example.test": "to" for e in experts}


@pytest.mark.timeout(240)
@pytest.mark.parametrize("mode", ["client", "component"])
async def test_fifty_experts_converge_under_the_limit_paced_like_it(
    fast_lab: Lab, mode: str
) -> None:
    lab = fast_lab
    experts = [f"x{i:02d}" for i in range(50)]
    for expert in experts:
        lab.add_expert(expert)
        await lab.sign_in(expert)
    component = {}
    if mode == "component":
        # ejabberd counts a component's requests too (in the component's connection).
        component = {
            "mode": "component",
            "jid": lab.server.component,
            "secret": lab.server.component_secret,
            "port": lab.server.component_port,
        }
    # 50 clients on one small machine: a 1 s ping answer is not guaranteed, and this test
    # asserts the link never dropped.
    source = await lab.source(subscribe_burst=4, subscribe_pause=2.5, ping_timeout=5.0, **component)
    await async_eventually(
        lambda: all(lab.port.presence.get(e) == "available" for e in experts), timeout=90
    )
    assert source.connections == 1
    # Paced, not flooded: the first round plus about one request per expert dropped.
    assert source.subscribe_requests < 2 * len(experts)


async def test_shared_roster_expert_removed_and_added_back_is_available_again(
    shipped_lab: Lab,
) -> None:
    lab = shipped_lab
    for expert in ("sam", "sue"):
        lab.add_expert(expert)
    lab.server.shared_roster_group("staff", ["router", "sam", "sue"])  # type: ignore[union-attr]
    await lab.sign_in("sam")
    await lab.sign_in("sue")
    source = await lab.source()
    await async_eventually(
        lambda: lab.port.presence == {"sam": "available", "sue": "available"}, timeout=10
    )
    assert source.subscribe_requests == 0  # the shared roster pre-approves
    sam = lab.port.experts.pop("sam")
    lab.port.version += 1  # sam removed from the configuration
    await async_eventually(lambda: lab.port.presence.get("sam") == "offline", timeout=10)
    lab.port.experts["sam"] = sam
    lab.port.version += 1  # and added back, while his client stays online and quiet
    await async_eventually(lambda: lab.port.presence.get("sam") == "available", timeout=10)
    assert source.connections == 1
