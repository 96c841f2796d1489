"""Readiness of the parts of a node (database, presence sources, SIP listener, HA lease).

Components report their own state; ``/readyz``, ``/metrics`` and ``/api/v1/status`` read it.
A node is ready when it is the active node and every *required* component is up.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass

from prometheus_client import Gauge

log = logging.getLogger(__name__)
DETAIL_CHARS = 200

COMPONENT_UP = Gauge(
    "expertline_component_up", "1 when a component of this node is up", ["component"]
)


@dataclass(frozen=True)
class ComponentState:
    name: str
    up: bool
    detail: str = ""
    required: bool = True


class Health:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._components: dict[str, ComponentState] = {}
        self.active = True  # single node: active; HA nodes flip this from the lease loop

    def report(self, name: str, up: bool, detail: str = "", required: bool = True) -> None:
        """Record a component's state. The whole ``detail`` is logged when the state changes
        (a warning when a component that was up goes down, other than by being stopped);
        what is kept for ``/api/v1/status`` is its first line, bounded (a database error's
        later lines hold SQL and row values)."""
        with self._lock:
            before = self._components.get(name)
            self._components[name] = ComponentState(name, up, one_line(detail), required)
        if before is None or before.up != up or before.detail != one_line(detail):
            # A loss is a warning; starting (down until first up) and stopping are not.
            lost = not up and before is not None and before.up and detail != "stopped"
            log.log(
                logging.WARNING if lost else logging.INFO,
                "component %s component=%s detail=%s",
                "up" if up else "down",
                name,
                detail,
            )
        COMPONENT_UP.labels(component=name).set(1 if up else 0)

    def forget(self, name: str) -> None:
        with self._lock:
            self._components.pop(name, None)
        with contextlib.suppress(KeyError):
            COMPONENT_UP.remove(name)

    def components(self) -> list[ComponentState]:
        with self._lock:
            return sorted(self._components.values(), key=lambda c: c.name)

    def ready(self) -> bool:
        return self.active and all(c.up for c in self.components() if c.required)


def one_line(detail: str) -> str:
    """The first line of ``detail``, at most ``DETAIL_CHARS`` characters."""
    first = detail.strip().split("\n", 1)[0].strip()
    return first if len(first) <= DETAIL_CHARS else first[: DETAIL_CHARS - 1] + "…"
