"""The runtime's narrow view of the routing core.

The service talks to the core only through this adapter: events in, commands out, dirty
objects and their JSON snapshots for persistence, ``restore`` after a restart, and a few reads
for the API. Keeping it narrow keeps the service independent of the core's internals.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from expertline.routing import commands as cmd
from expertline.routing import events as ev
from expertline.routing.core import Census, Dirty, RoutingCore
from expertline.routing.model import RoutingConfig

__all__ = ["Census", "CoreAdapter", "Dirty", "ExpertState"]


@dataclass(frozen=True, slots=True)
class ExpertState:
    id: str
    presence: str
    state: str
    tasks: tuple[str, ...]
    wrap_up_until: float | None
    export: dict[str, Any]

    @classmethod
    def of(cls, d: dict[str, Any]) -> ExpertState:
        return cls(
            id=d["id"],
            presence=d.get("presence", "offline"),
            state=d.get("state", "offline"),
            tasks=tuple(d.get("active") or ()),
            wrap_up_until=d.get("wrapup_until"),
            export=d,
        )


class CoreAdapter:
    def __init__(self, core: RoutingCore) -> None:
        self.core = core
        # Every event and every dirty object goes through these: the core's own methods,
        # without a frame of ours.
        self.handle: Callable[[ev.Event, float], list[cmd.Command]] = core.handle
        self.drain_dirty: Callable[[], Dirty] = core.drain_dirty
        # fresh snapshot dicts: a task live or ended, an offer open or closed, since the
        # last two drains
        self.export_task: Callable[[str], dict[str, Any] | None] = core.export_task
        self.export_offer: Callable[[str], dict[str, Any] | None] = core.export_offer
        self.export_expert: Callable[[str], dict[str, Any] | None] = core.export_expert

    @classmethod
    def restore(cls, config: RoutingConfig, state: Any, now: float) -> CoreAdapter:
        """A core rebuilt from stored snapshots (``store.StoredState``); an empty state gives
        a fresh core. Feed it ``Recovered`` next (re-arms timers, ends lost tasks)."""
        core = RoutingCore.restore(
            config,
            tasks=[row["state"] for row in state.tasks],
            offers=[row["state"] for row in state.offers],
            experts=[row["state"] for row in state.experts],
            now=now,
            meta=state.meta.get("core"),
        )
        return cls(core)

    def expert(self, expert_id: str) -> ExpertState | None:
        d = self.core.expert_state(expert_id)
        return ExpertState.of(d) if d is not None else None

    def is_available(self, expert_id: str) -> bool:
        d = self.core.expert_state(expert_id)
        return bool(d and d.get("free"))

    def census(self) -> Census:
        return self.core.census()

    def export_meta(self) -> dict[str, Any]:
        return self.core.export_meta()
