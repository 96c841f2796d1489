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
        # Every event goes through here: the core's own method, without a frame of ours.
        self.handle: Callable[[ev.Event, float], list[cmd.Command]] = core.handle

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

    def drain_dirty(self) -> Dirty:
        return self.core.drain_dirty()

    def export_task(self, task_id: str) -> dict[str, Any] | None:
        """A fresh snapshot dict of the task (live, or ended since the last two drains)."""
        return self.core.export_task(task_id)

    def export_offer(self, offer_id: str) -> dict[str, Any] | None:
        """A fresh snapshot dict of the offer (open, or closed since the last two drains)."""
        return self.core.export_offer(offer_id)

    def expert(self, expert_id: str) -> ExpertState | None:
        d = self.core.expert_state(expert_id)
        return ExpertState.of(d) if d is not None else None

    def is_available(self, expert_id: str) -> bool:
        d = self.core.expert_state(expert_id)
        return bool(d and d.get("free"))

    def export_expert(self, expert_id: str) -> dict[str, Any] | None:
        return self.core.export_expert(expert_id)

    def census(self) -> Census:
        return self.core.census()

    def export_meta(self) -> dict[str, Any]:
        return self.core.export_meta()
