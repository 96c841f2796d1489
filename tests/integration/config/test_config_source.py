"""The node's one configuration subscription, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from sqlalchemy import Engine

from expertline.config import store
from expertline.config.source import ConfigSource
from expertline.config.validate import load_yaml
from support.wait import async_eventually

DEMO = Path(__file__).parents[3] / "examples" / "demo.yaml"


async def test_a_new_version_reaches_every_waiter_and_is_built_for_routing(
    engine: Engine,
) -> None:
    source = ConfigSource(engine, poll=30.0)  # only a poke can find the new version in time
    await source.async_start()
    try:
        assert source.current().version == 0 and source.current().document is not None
        waiters = [asyncio.create_task(source.async_wait_config(0)) for _ in range(3)]
        await asyncio.sleep(0)
        assert not any(w.done() for w in waiters)
        store.apply_document(engine, load_yaml(DEMO.read_text()), "cli:test")
        source.poke()
        snapshots = await asyncio.wait_for(asyncio.gather(*waiters), 10)
        assert {s.version for s in snapshots} == {1}
        routing = snapshots[0].routing
        assert routing.version == 1 and routing.queues and routing.experts
        assert snapshots[0].document is not None
        assert set(routing.experts) == {e.id for e in snapshots[0].document.experts}
    finally:
        await source.async_stop()


async def test_waiting_ends_at_the_timeout_with_the_version_in_effect(engine: Engine) -> None:
    store.apply_document(engine, load_yaml(DEMO.read_text()), "cli:test")
    source = ConfigSource(engine, poll=30.0)
    await source.async_start()
    try:
        assert (await source.async_wait_config(0)).version == 1  # already newer: at once
        assert (await source.async_wait_config(1, timeout=0.05)).version == 1
    finally:
        await source.async_stop()


async def test_a_node_that_does_not_route_keeps_the_document_only(engine: Engine) -> None:
    store.apply_document(engine, load_yaml(DEMO.read_text()), "cli:test")
    source = ConfigSource(engine, routing=False)
    await source.async_start()
    try:
        snapshot = source.current()
        assert snapshot.version == 1 and snapshot.document is not None
        assert snapshot.routing.version == 1 and not snapshot.routing.experts
    finally:
        await source.async_stop()


async def test_a_failing_read_keeps_the_version_in_effect_and_says_so_once(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    calls = {"n": 0}

    def probe() -> int:
        calls["n"] += 1
        if calls["n"] > 1:
            raise ConnectionError("database away")
        return 0

    source = ConfigSource(engine, poll=0.01, probe=probe)
    await source.async_start()
    try:
        with caplog.at_level(logging.INFO, logger="expertline.config"):
            await async_eventually(lambda: calls["n"] >= 6, timeout=5)
        assert source.current().version == 0
        lines = [r.getMessage() for r in caplog.records if "not read" in r.getMessage()]
        assert lines == ["configuration not read error=ConnectionError; version=0 stays in effect"]
    finally:
        await source.async_stop()
