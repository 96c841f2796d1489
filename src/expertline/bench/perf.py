"""Core-only micro benchmark: how fast ``RoutingCore`` decides, with no I/O around it.

``run(...)`` builds a synthetic configuration (N experts, Q queues, each expert in a few
queues, a numeric skill each), makes every expert available, optionally parks ``waiting``
tasks in a backlog queue nobody free serves (memory and ordering load), then drives full
lifecycles (create -> offer -> accept -> connected -> ended) on a fake clock. The runtime's
``bench/routing.py`` calls it and reports the figures; nothing here decides a test outcome.
"""

from __future__ import annotations

import gc
import random
import time
from dataclasses import asdict, dataclass
from typing import Any

from expertline.routing.commands import SendOffer
from expertline.routing.core import RoutingCore
from expertline.routing.events import (
    CallConnected,
    CallEnded,
    ConfigChanged,
    OfferAccepted,
    PresenceChanged,
    TaskCreated,
)
from expertline.routing.model import ExpertSpec, Order, Presence, QueueSpec, RoutingConfig

BACKLOG = "backlog"


@dataclass
class PerfReport:
    experts: int
    queues: int
    order: str
    lifecycles: int
    waiting: int
    setup_seconds: float
    seconds: float
    cpu_seconds: float
    lifecycles_per_s: float
    lifecycles_per_cpu_s: float
    events_per_s: float
    decision_ms_p50: float
    decision_ms_p99: float
    decision_ms_max: float
    decision_cpu_ms_p99: float
    event_ms_p99: float
    rss_mb: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def synthetic_config(
    experts: int,
    queues: int,
    queues_per_expert: int = 3,
    order: Order = "longest_idle",
    seed: int = 7,
    backlog_members: int = 100,
) -> RoutingConfig:
    """N experts spread over Q queues (plus a ``backlog`` queue served by offline experts)."""
    rng = random.Random(seed)
    qids = [f"q{i:04d}" for i in range(queues)]
    members: dict[str, set[str]] = {q: set() for q in qids}
    specs: dict[str, ExpertSpec] = {}
    for i in range(experts):
        eid = f"e{i:06d}"
        specs[eid] = ExpertSpec(
            id=eid,
            name=f"Expert {i}",
            phone=f"sip:{1000 + i}@pbx.example.test",
            numbers={"skill": float(rng.randint(1, 100))},
        )
        for q in rng.sample(qids, min(queues_per_expert, queues)):
            members[q].add(eid)
    backlog_ids = [f"b{i:05d}" for i in range(backlog_members)]
    for eid in backlog_ids:
        specs[eid] = ExpertSpec(id=eid, name=eid, phone=f"sip:{eid}@pbx.example.test")
    queue_specs = {
        q: QueueSpec(id=q, name=q, order=order, skill="skill", offer_timeout=20.0, max_wait=3600.0)
        for q in qids
    }
    queue_specs[BACKLOG] = QueueSpec(id=BACKLOG, name=BACKLOG, max_wait=10.0**9)
    matches: dict[str, tuple[frozenset[str], ...]] = {
        q: (frozenset(m),) for q, m in members.items()
    }
    matches[BACKLOG] = (frozenset(backlog_ids),)
    return RoutingConfig(version=1, experts=specs, queues=queue_specs, matches=matches)


def _export_dirty(core: RoutingCore) -> int:
    """What the runtime does after every transition: snapshot everything that changed."""
    dirty = core.drain_dirty()
    rows = [core.export_task(tid) for tid in dirty.tasks]
    rows += [core.export_offer(oid) for oid in dirty.offers]
    rows += [core.export_expert(eid) for eid in dirty.experts]
    if dirty.meta:
        rows.append(core.export_meta())
    return len(rows)


def _rss_mb() -> float:
    try:
        import psutil

        return float(psutil.Process().memory_info().rss) / (1024.0 * 1024.0)
    except Exception:  # psutil missing: report nothing rather than fail a benchmark
        return float("nan")


def _pct(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(pct / 100.0 * (len(ordered) - 1))))
    return ordered[k]


def run(
    experts: int = 10_000,
    queues: int = 100,
    lifecycles: int = 20_000,
    waiting: int = 0,
    order: Order = "longest_idle",
    queues_per_expert: int = 3,
    seed: int = 7,
    max_seconds: float = 120.0,
    with_exports: bool = False,
) -> PerfReport:
    """Drive ``lifecycles`` full task lifecycles through one core; stop early at
    ``max_seconds``.

    ``with_exports`` also snapshots every dirty object after each event, as the runtime does
    before persisting (JSON encoding and the database are not included). Rates are given per
    wall second and per CPU second of this process (the latter is the fairer figure on a
    shared machine). Decision latency is the time of the ``TaskCreated`` step (the choice of
    experts and the offer), measured per task.
    """
    started = time.perf_counter()
    config = synthetic_config(experts, queues, queues_per_expert, order, seed)
    core = RoutingCore()
    now = 1_000_000.0
    core.handle(ConfigChanged(config), now)
    for eid in config.experts:
        if not eid.startswith("b"):
            now += 0.001
            core.handle(PresenceChanged(eid, Presence.AVAILABLE), now)
    for i in range(waiting):
        now += 0.001
        core.handle(TaskCreated(f"w{i}", BACKLOG, caller=f"+1555{i:07d}"), now)
    core.drain_dirty()
    setup = time.perf_counter() - started
    gc.collect()
    qids = [q for q in config.queues if q != BACKLOG]
    decisions: list[float] = []
    decisions_cpu: list[float] = []
    cpu_clock = time.thread_time
    event_times: list[float] = []
    done = 0
    events = 0
    clock = time.perf_counter
    begin = clock()
    cpu_begin = time.process_time()
    deadline = begin + max_seconds
    for i in range(lifecycles):
        tid = f"t{i}"
        now += 0.01
        c0 = cpu_clock()
        t0 = clock()
        out = core.handle(TaskCreated(tid, qids[i % len(qids)], caller="+15550100"), now)
        t1 = clock()
        decisions_cpu.append(cpu_clock() - c0)
        decisions.append(t1 - t0)
        if with_exports:
            _export_dirty(core)
        event_times.append(t1 - t0)
        offer = next((c for c in out if isinstance(c, SendOffer)), None)
        steps: list[Any] = []
        if offer is not None:
            steps = [OfferAccepted(offer.offer_id), CallConnected(tid), CallEnded(tid)]
        for ev in steps:
            now += 0.01
            t0 = clock()
            core.handle(ev, now)
            event_times.append(clock() - t0)
            if with_exports:
                _export_dirty(core)
        if with_exports:
            _export_dirty(core)
        else:
            core.drain_dirty()
        events += 1 + len(steps)
        done += 1 if offer is not None else 0
        if clock() > deadline:
            break
    elapsed = clock() - begin
    cpu = time.process_time() - cpu_begin
    return PerfReport(
        experts=experts,
        queues=queues,
        order=order,
        lifecycles=done,
        waiting=waiting,
        setup_seconds=round(setup, 3),
        seconds=round(elapsed, 3),
        cpu_seconds=round(cpu, 3),
        lifecycles_per_s=round(done / elapsed, 1) if elapsed > 0 else 0.0,
        lifecycles_per_cpu_s=round(done / cpu, 1) if cpu > 0 else 0.0,
        events_per_s=round(events / elapsed, 1) if elapsed > 0 else 0.0,
        decision_ms_p50=round(_pct(decisions, 50) * 1000, 4),
        decision_ms_p99=round(_pct(decisions, 99) * 1000, 4),
        decision_ms_max=round(max(decisions, default=float("nan")) * 1000, 4),
        decision_cpu_ms_p99=round(_pct(decisions_cpu, 99) * 1000, 4),
        event_ms_p99=round(_pct(event_times, 99) * 1000, 4),
        rss_mb=round(_rss_mb(), 1),
    )


if __name__ == "__main__":  # pragma: no cover - manual runs
    import json
    import sys

    n = [int(a) for a in sys.argv[1:5]] + [10_000, 100, 20_000, 0][len(sys.argv[1:5]) :]
    print(json.dumps(run(n[0], n[1], n[2], n[3]).as_dict(), indent=2))
