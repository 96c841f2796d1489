"""A configuration version as the parts of a node see it, and the port they follow it by."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from expertline.config.schema import ConfigDocument
from expertline.routing.model import RoutingConfig


def empty_routing(version: int = 0) -> RoutingConfig:
    return RoutingConfig(version=version, experts={}, queues={}, matches={})


@dataclass(frozen=True)
class ConfigSnapshot:
    """One configuration version: the document as applied and the routing core's view of it
    (empty where the node does not route). Shared: treat both as read-only."""

    version: int
    document: ConfigDocument | None
    routing: RoutingConfig


EMPTY = ConfigSnapshot(0, None, empty_routing())


class ConfigPort(Protocol):
    """The one configuration subscription of a node (``config.source.ConfigSource``)."""

    def current(self) -> ConfigSnapshot:
        """The version in effect on this node."""
        ...

    async def async_wait_config(self, after: int, timeout: float | None = None) -> ConfigSnapshot:
        """The snapshot once its version differs from ``after`` (or the current one at
        ``timeout``)."""
        ...

    def poke(self) -> None:
        """Look for a new version now (this node has just applied one)."""
        ...
