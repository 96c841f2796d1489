"""The runtime's narrow view of the routing core.

The service talks to the core only through this adapter: events in, commands out, dirty
objects and their JSON snapshots for persistence, ``restore`` after a restart, and a few reads
for the API. Keeping it narrow keeps the service independent of the core's internals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from expertline.routing import commands as cmd
from expertline.routing import events as ev
from expertline.routing.core import Dirty, RoutingCore
from expertline.routing.model import RoutingConfig

__all__ = ["CoreAdapter", "Dirty", "ExpertState", "OfferState", "TaskState"]


@dataclass(frozen=True, slots=True)
class TaskState:
    id: str
    code: str
    status: str
    queue_id: str
    expert_id: str | None
    label: str | None
    created_at: float
    ended_at: float | None
    channel: str
    caller: str | None
    priority: int
    external_id: str | None
    dialed_number: str | None
    attributes: dict[str, Any]
    call_disposition: int | None
    export: dict[str, Any]

    @classmethod
    def of(cls, d: dict[str, Any]) -> TaskState:
        return cls(
            id=d["id"],
            code=d["code"],
            status=str(d["status"]),
            queue_id=d["queue_id"],
            expert_id=d.get("expert_id"),
            label=d.get("label"),
            created_at=float(d["created_at"]),
            ended_at=d.get("ended_at"),
            channel=d.get("channel", "voice"),
            caller=d.get("caller"),
            priority=int(d.get("priority", 0)),
            external_id=d.get("external_id"),
            dialed_number=d.get("dialed_number"),
            attributes=dict(d.get("attributes") or {}),
            call_disposition=d.get("call_disposition"),
            export=d,
        )


@dataclass(frozen=True, slots=True)
class OfferState:
    id: str
    task_id: str
    expert_id: str
    queue_id: str
    code: str
    status: str
    created_at: float
    expires_at: float | None
    notice_only: bool
    export: dict[str, Any]

    @classmethod
    def of(cls, d: dict[str, Any]) -> OfferState:
        return cls(
            id=d["id"],
            task_id=d["task_id"],
            expert_id=d["expert_id"],
            queue_id=d["queue_id"],
            code=d["code"],
            status=str(d["status"]),
            created_at=float(d["created_at"]),
            expires_at=d.get("expires_at"),
            notice_only=bool(d.get("notice_only", False)),
            export=d,
        )


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

    def handle(self, event: ev.Event, now: float) -> list[cmd.Command]:
        return self.core.handle(event, now)

    def drain_dirty(self) -> Dirty:
        return self.core.drain_dirty()

    def task(self, task_id: str) -> TaskState | None:
        d = self.core.export_task(task_id)
        return TaskState.of(d) if d is not None else None

    def task_status(self, task_id: str) -> str | None:
        d = self.core.export_task(task_id)
        return str(d["status"]) if d is not None and d.get("active", True) else None

    def offer(self, offer_id: str) -> OfferState | None:
        d = self.core.export_offer(offer_id)
        return OfferState.of(d) if d is not None else None

    def expert(self, expert_id: str) -> ExpertState | None:
        d = self.core.expert_state(expert_id)
        return ExpertState.of(d) if d is not None else None

    def is_available(self, expert_id: str) -> bool:
        d = self.core.expert_state(expert_id)
        return bool(d and d.get("free"))

    def export_expert(self, expert_id: str) -> dict[str, Any] | None:
        return self.core.export_expert(expert_id)

    def export_meta(self) -> dict[str, Any]:
        return self.core.export_meta()
