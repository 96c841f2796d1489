"""The runtime's side of the configuration: a source over a fixed loader (benchmarks, tests)
and the loop that applies each new version the node's ``ConfigSource`` publishes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import Engine

from expertline.config.snapshot import ConfigPort, ConfigSnapshot
from expertline.config.source import ConfigSource
from expertline.errors import ExpertlineError, Unavailable
from expertline.routing.model import RoutingConfig

log = logging.getLogger("expertline.runtime")

RETRY_S = 1.0  # seconds before a version the runtime could not take now is tried again


def fixed_config(
    engine: Engine,
    loader: Callable[[Engine], tuple[RoutingConfig, Any]],
    probe: Callable[[Engine], int] | None,
    poll: float,
) -> ConfigSource:
    """A configuration source over a loader of (routing view, document): benchmarks and tests
    hand the runtime a configuration built in memory."""

    def build() -> ConfigSnapshot:
        config, doc = loader(engine)
        return ConfigSnapshot(config.version, doc, config)

    return ConfigSource(
        engine,
        builder=build,
        probe=(lambda: probe(engine)) if probe is not None else (lambda: build().version),
        poll=poll,
    )


def own_source(
    engine: Engine,
    loader: Callable[[Engine], tuple[RoutingConfig, Any]] | None,
    probe: Callable[[Engine], int] | None,
    poll: float,
) -> ConfigSource:
    """The source of a runtime the node gave none: over ``loader`` when given, else the
    configuration stored in the database."""
    if loader is not None:
        return fixed_config(engine, loader, probe, poll)
    return ConfigSource(engine, poll=poll)


async def async_follow(
    source: ConfigPort,
    in_effect: Callable[[], int],
    apply: Callable[[RoutingConfig, Any], Awaitable[None]],
) -> None:
    """Apply each new version of ``source`` (``in_effect``: the version the runtime runs).
    A version whose change the database refused is not tried again; one the runtime could
    not take now (the database away) is tried again shortly."""
    refused = -1
    seen = in_effect()
    while True:
        snapshot = await source.async_wait_config(seen)
        if snapshot.version in (in_effect(), refused):
            seen = snapshot.version
            continue
        try:
            await apply(snapshot.routing, snapshot.document)
        except Unavailable as exc:
            log.warning("configuration version %d not applied yet: %s", snapshot.version, exc)
            await asyncio.sleep(RETRY_S)
            continue
        except ExpertlineError as exc:
            refused = snapshot.version
            log.error("configuration version %d not applied: %s", snapshot.version, exc)
        seen = snapshot.version
