"""A time-skipping harness for the routing core: events in, commands recorded, timers fired.

``Sim.advance(s)`` moves the fake clock forward, firing every due timer in order (each at its
own time), like the runtime's timer heap would.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from expertline.routing.commands import (
    CancelTimer,
    Command,
    Emit,
    ReturnLabel,
    SendOffer,
    SetTimer,
    WithdrawOffer,
    WriteRecord,
)
from expertline.routing.core import RoutingCore
from expertline.routing.events import ConfigChanged, Event, PresenceChanged, TimerFired
from expertline.routing.model import ExpertSpec, QueueSpec, RoutingConfig
from expertline.routing.timers import TimerKey

START = 1_700_000_000.0


def expert(eid: str, **kw: Any) -> ExpertSpec:
    return ExpertSpec(id=eid, name=eid.title(), phone=f"sip:{eid}@pbx.example.test", **kw)


def config(
    experts: Iterable[ExpertSpec],
    queues: Iterable[QueueSpec],
    matches: dict[str, tuple[Iterable[str], ...]] | None = None,
    version: int = 1,
) -> RoutingConfig:
    """A config; by default every queue matches every expert (one step per escalation)."""
    ex = {e.id: e for e in experts}
    qs = {q.id: q for q in queues}
    m: dict[str, tuple[frozenset[str], ...]] = {}
    for q in qs.values():
        given = (matches or {}).get(q.id)
        if given is None:
            m[q.id] = tuple(frozenset(ex) for _ in range(len(q.escalate) + 1))
        else:
            m[q.id] = tuple(frozenset(s) for s in given)
    return RoutingConfig(version=version, experts=ex, queues=qs, matches=m)


class Sim:
    def __init__(self, cfg: RoutingConfig, now: float = START, core: RoutingCore | None = None):
        self.core = core or RoutingCore()
        self.now = now
        self.timers: dict[TimerKey, float] = {}
        self.log: list[Command] = []
        if core is None:
            self.send(ConfigChanged(cfg))

    def send(self, event: Event) -> list[Command]:
        out = self.core.handle(event, self.now)
        for c in out:
            if isinstance(c, SetTimer):
                self.timers[c.key] = c.at
            elif isinstance(c, CancelTimer):
                self.timers.pop(c.key, None)
        self.log.extend(out)
        return out

    def advance(self, seconds: float) -> list[Command]:
        """Move the clock, firing due timers in time order."""
        end = self.now + seconds
        out: list[Command] = []
        while True:
            due = [(at, key) for key, at in self.timers.items() if at <= end]
            if not due:
                break
            at, key = min(due)
            del self.timers[key]
            self.now = max(self.now, at)
            out += self.send(TimerFired(key))
        self.now = end
        return out

    def available(self, *eids: str, step: float = 0.0) -> None:
        for eid in eids:
            self.send(PresenceChanged(eid, "available"))
            if step:
                self.now += step

    # --- reading the log -----------------------------------------------------------------

    def offers(self, since: int = 0) -> list[SendOffer]:
        return [c for c in self.log[since:] if isinstance(c, SendOffer)]

    def open_offer(self, expert_id: str) -> str:
        offers = self.core.open_offers(expert_id)
        assert len(offers) == 1, offers
        return str(offers[0]["id"])

    def offered_to(self, task_id: str) -> list[str]:
        """Experts holding an open offer for the task, in offer order."""
        t = self.core.task(task_id)
        assert t is not None
        return list(t["open_offers"])

    def withdrawals(self) -> list[WithdrawOffer]:
        return [c for c in self.log if isinstance(c, WithdrawOffer)]

    def labels(self) -> list[ReturnLabel]:
        return [c for c in self.log if isinstance(c, ReturnLabel)]

    def records(self, kind: str) -> list[dict[str, Any]]:
        return [c.data for c in self.log if isinstance(c, WriteRecord) and c.kind == kind]

    def emitted(self, type_: str) -> list[dict[str, Any]]:
        return [c.data for c in self.log if isinstance(c, Emit) and c.type == type_]

    def status(self, task_id: str) -> str:
        t = self.core.task(task_id)
        assert t is not None, task_id
        return str(t["status"])


class Store:
    """What the runtime keeps: the latest export of every dirty object (tasks stay, inactive)."""

    def __init__(self) -> None:
        self.tasks: dict[str, dict[str, Any]] = {}
        self.offers: dict[str, dict[str, Any]] = {}
        self.experts: dict[str, dict[str, Any]] = {}
        self.meta: dict[str, Any] | None = None

    def save(self, core: RoutingCore) -> None:
        dirty = core.drain_dirty()
        for tid in dirty.tasks:
            d = core.export_task(tid)
            assert d is not None, f"dirty task {tid} not exportable"
            self.tasks[tid] = d
        for oid in dirty.offers:
            d = core.export_offer(oid)
            assert d is not None, f"dirty offer {oid} not exportable"
            self.offers[oid] = d
        for eid in dirty.experts:
            d = core.export_expert(eid)
            if d is None:
                self.experts.pop(eid, None)
            else:
                self.experts[eid] = d
        if dirty.meta:
            self.meta = core.export_meta()

    def restore(self, cfg: RoutingConfig, now: float) -> RoutingCore:
        live = {tid: t for tid, t in self.tasks.items() if t["active"]}
        offers = [o for o in self.offers.values() if o["task_id"] in live]
        return RoutingCore.restore(
            cfg, list(live.values()), offers, list(self.experts.values()), now, self.meta
        )


class StoredSim(Sim):
    def __init__(
        self,
        cfg: RoutingConfig,
        store: Store,
        core: RoutingCore | None = None,
        now: float | None = None,
    ) -> None:
        self.store = store
        if now is None:
            super().__init__(cfg, core=core)
        else:
            super().__init__(cfg, now=now, core=core)
        if core is None:
            store.save(self.core)

    def send(self, event: Event) -> list[Command]:
        out = super().send(event)
        self.store.save(self.core)
        return out
