"""A hand-written day of traffic for the reporting tests: configuration history and feed rows
built from TaskRecords / ExpertStateRecords with fixed times, and the figures they must give.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Engine,
    MetaData,
    String,
    Table,
    func,
    insert,
    inspect,
    select,
)

from expertline.db.tables import config_changes, config_versions
from expertline.records.feed import EXPERT_STATE, TASK_RECORD, ExpertStateRecord, TaskRecord

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)

_feed_md = MetaData()
# The runtime's table, as its migration creates it (records/feed.py documents the shape).
routing_feed = Table(
    "routing_feed",
    _feed_md,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("type", String(64), nullable=False),
    Column("task_id", String(64)),
    Column("expert_id", String(255)),
    Column("data", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)


def ensure_feed_table(engine: Engine) -> None:
    if not inspect(engine).has_table("routing_feed"):
        _feed_md.create_all(engine)


def at(minutes: float, seconds: float = 0) -> str:
    return (T0 + timedelta(minutes=minutes, seconds=seconds)).isoformat()


class Feed:
    """Writes feed rows the way the runtime does: ids in order, no holes."""

    def __init__(self, engine: Engine) -> None:
        ensure_feed_table(engine)
        self.engine = engine
        with engine.connect() as conn:
            start = conn.execute(select(func.max(routing_feed.c.id))).scalar() or 0
        self._ids = itertools.count(int(start) + 1)

    def write(
        self, rows: list[tuple[str, dict[str, Any]]], *, ids: list[int] | None = None
    ) -> list[int]:
        used = []
        values = []
        for i, (kind, data) in enumerate(rows):
            fid = ids[i] if ids else next(self._ids)
            used.append(fid)
            values.append(
                {
                    "id": fid,
                    "type": kind,
                    "task_id": data.get("task_id"),
                    "expert_id": data.get("expert_id"),
                    "data": data,
                    "created_at": datetime.now(UTC),
                }
            )
        with self.engine.begin() as conn:
            conn.execute(insert(routing_feed), values)
        return used

    def noise(self, task_id: str) -> tuple[str, dict[str, Any]]:
        """A feed row reporting does not read (other transitions share the id sequence)."""
        return ("task.queued", {"task_id": task_id, "queue_id": "billing"})


def config_version(
    engine: Engine,
    version: int,
    applied: datetime,
    changes: list[tuple[str, str, str, dict[str, Any] | None]],
) -> None:
    """Write one configuration version as the configuration store does."""
    with engine.begin() as conn:
        conn.execute(
            insert(config_versions).values(
                version=version, applied_at=applied, actor="test", source="import", summary=""
            )
        )
        for kind, object_id, op, after in changes:
            conn.execute(
                insert(config_changes).values(
                    version=version, kind=kind, object_id=object_id, op=op, before=None, after=after
                )
            )


def task(
    task_id: str,
    minute: float,
    queue: str,
    status: str,
    *,
    wait: float,
    talk: float = 0.0,
    work: float = 0.0,
    expert: str | None = None,
    disposition: int = 13,
    version: int = 1,
    queues: list[str] | None = None,
    offers: list[tuple[str, float, float, str]] | None = None,
) -> TaskRecord:
    """A TaskRecord; offers are (expert, start second, end second, outcome) after creation."""
    created = T0 + timedelta(minutes=minute)
    ended = created + timedelta(seconds=wait + talk)
    return {
        "task_id": task_id,
        "code": task_id[-4:],
        "external_id": None,
        "channel": "voice",
        "queue_id": queue,
        "queues": queues or [queue],
        "status": status,
        "call_disposition": disposition,
        "expert_id": expert,
        "caller": "+15550001111",
        "dialed_number": "+18005550100",
        "created_at": created.isoformat(),
        "assigned_at": (created + timedelta(seconds=wait)).isoformat() if expert else None,
        "connected_at": (created + timedelta(seconds=wait)).isoformat() if expert else None,
        "ended_at": ended.isoformat(),
        "wait": wait,
        "ring_time": 0.0,
        "talk_time": talk,
        "work_time": work,
        "config_version": version,
        "node": "node-a",
        "offers": [
            {
                "offer_id": f"{task_id}-o{i}",
                "expert_id": e,
                "queue_id": queue,
                "created_at": (created + timedelta(seconds=s)).isoformat(),
                "ended_at": (created + timedelta(seconds=f)).isoformat(),
                "outcome": outcome,  # type: ignore[typeddict-item]
            }
            for i, (e, s, f, outcome) in enumerate(offers or [], start=1)
        ],
        "attempts": [],
    }


def state(
    expert: str, minute: float, new: str, seconds: float = 0, version: int = 1
) -> ExpertStateRecord:
    return {
        "expert_id": expert,
        "state": new,  # type: ignore[typeddict-item]
        "previous": None,
        "at": at(minute, seconds),
        "config_version": version,
    }


QUEUE_V1 = {
    "billing": {"id": "billing", "name": "Billing", "select": "true", "service_level": "20s"},
    "sales": {"id": "sales", "name": "Sales", "select": "true", "service_level": "30s"},
}


def write_config(engine: Engine) -> None:
    """v1 at 09:00; v2 at 10:20 renames the billing queue and expert alice."""
    config_version(
        engine,
        1,
        T0 - timedelta(hours=1),
        [
            ("queue", "billing", "create", QUEUE_V1["billing"]),
            ("queue", "sales", "create", QUEUE_V1["sales"]),
            ("expert", "alice", "create", {"id": "alice", "name": "Alice Ng"}),
            ("expert", "bob", "create", {"id": "bob", "name": "Bob Li"}),
        ],
    )
    config_version(
        engine,
        2,
        T0 + timedelta(minutes=20),
        [
            ("queue", "billing", "update", {**QUEUE_V1["billing"], "name": "Billing Desk"}),
            ("expert", "alice", "update", {"id": "alice", "name": "Alice Ng-Smith"}),
        ],
    )


def tasks() -> list[TaskRecord]:
    return [
        task(
            "t1",
            1,
            "billing",
            "completed",
            wait=10,
            talk=120,
            work=30,
            expert="alice",
            offers=[("alice", 2, 10, "accepted")],
        ),
        task(
            "t2",
            5,
            "billing",
            "completed",
            wait=25,
            talk=60,
            expert="bob",
            offers=[("alice", 1, 21, "timeout"), ("bob", 21, 25, "accepted")],
        ),
        task(
            "t3",
            10,
            "billing",
            "abandoned",
            wait=15,
            disposition=2,
            offers=[("alice", 2, 5, "declined")],
        ),
        task("t4", 16, "billing", "abandoned", wait=40, disposition=2),
        task(
            "t5",
            25,
            "billing",
            "completed",
            wait=5,
            talk=200,
            work=10,
            expert="alice",
            version=2,
            offers=[("alice", 1, 5, "accepted")],
        ),
        task(
            "t6",
            31,
            "billing",
            "completed",
            wait=70,
            talk=50,
            expert="bob",
            version=2,
            queues=["sales", "billing"],
            offers=[("bob", 65, 70, "accepted")],
        ),
        task("t7", 40, "sales", "rejected", wait=120, disposition=22, version=2),
        task("t8", 50, "sales", "overflowed", wait=120, disposition=15, version=2),
        task(
            "t9",
            46,
            "sales",
            "completed",
            wait=25,
            talk=100,
            work=20,
            expert="alice",
            version=2,
            offers=[("alice", 20, 25, "accepted")],
        ),
    ]


def states() -> list[ExpertStateRecord]:
    return [
        state("alice", -30, "available"),
        state("bob", -5, "offline"),
        state("alice", 1, "busy", 10),
        state("bob", 2, "available"),
        state("alice", 3, "wrap_up", 10),
        state("alice", 3, "available", 40),
        state("bob", 5, "busy", 25),
        state("bob", 6, "available", 25),
        state("alice", 30, "away"),
        state("alice", 45, "available"),
        state("bob", 50, "dnd"),
    ]


def write_all(engine: Engine) -> Feed:
    """Config history and every row of the scenario, interleaved with rows reporting skips."""
    write_config(engine)
    feed = Feed(engine)
    rows: list[tuple[str, dict[str, Any]]] = []
    for s in states():
        rows.append((EXPERT_STATE, dict(s)))
    for t in tasks():
        rows.append(feed.noise(t["task_id"]))
        rows.append((TASK_RECORD, dict(t)))
    feed.write(rows)
    return feed


# --- what the reports must say (10:00-11:00, now 12:00) ------------------------------------

QUEUES_15M = [
    {
        "interval_start": "2026-11-25T10:00:00.000Z",
        "queue_id": "billing",
        "queue_name": "Billing",
        "offered": 3,
        "handled": 2,
        "abandoned": 1,
        "overflowed": 0,
        "rejected": 0,
        "avg_wait": 16.667,
        "max_wait": 25.0,
        "service_level": 0.5,
        "avg_handle_time": 105.0,
        "service_level_2": 0.6667,
    },
    {
        "interval_start": "2026-11-25T10:15:00.000Z",
        "queue_id": "billing",
        "queue_name": "Billing Desk",
        "offered": 2,
        "handled": 1,
        "abandoned": 1,
        "overflowed": 0,
        "rejected": 0,
        "avg_wait": 22.5,
        "max_wait": 40.0,
        "service_level": 1.0,
        "avg_handle_time": 210.0,
        "service_level_2": 0.5,
    },
    {
        "interval_start": "2026-11-25T10:30:00.000Z",
        "queue_id": "billing",
        "queue_name": "Billing Desk",
        "offered": 1,
        "handled": 1,
        "abandoned": 0,
        "overflowed": 0,
        "rejected": 0,
        "avg_wait": 70.0,
        "max_wait": 70.0,
        "service_level": 0.0,
        "avg_handle_time": 50.0,
        "service_level_2": 0.0,
    },
    {
        "interval_start": "2026-11-25T10:30:00.000Z",
        "queue_id": "sales",
        "queue_name": "Sales",
        "offered": 2,
        "handled": 0,
        "abandoned": 0,
        "overflowed": 1,
        "rejected": 1,
        "avg_wait": 120.0,
        "max_wait": 120.0,
        "service_level": None,
        "avg_handle_time": None,
        "service_level_2": None,
    },
    {
        "interval_start": "2026-11-25T10:45:00.000Z",
        "queue_id": "sales",
        "queue_name": "Sales",
        "offered": 2,
        "handled": 1,
        "abandoned": 0,
        "overflowed": 1,
        "rejected": 0,
        "avg_wait": 72.5,
        "max_wait": 120.0,
        "service_level": 1.0,
        "avg_handle_time": 120.0,
        "service_level_2": 1.0,
    },
]

QUEUES_60M = [
    {
        "interval_start": "2026-11-25T10:00:00.000Z",
        "queue_id": "billing",
        "queue_name": "Billing Desk",
        "offered": 6,
        "handled": 4,
        "abandoned": 2,
        "overflowed": 0,
        "rejected": 0,
        "avg_wait": 27.5,
        "max_wait": 70.0,
        "service_level": 0.5,
        "avg_handle_time": 117.5,
        "service_level_2": 0.5,
    },
    {
        "interval_start": "2026-11-25T10:00:00.000Z",
        "queue_id": "sales",
        "queue_name": "Sales",
        "offered": 4,
        "handled": 1,
        "abandoned": 0,
        "overflowed": 2,
        "rejected": 1,
        "avg_wait": 88.333,
        "max_wait": 120.0,
        "service_level": 1.0,
        "avg_handle_time": 120.0,
        "service_level_2": 1.0,
    },
]

EXPERTS = [
    {
        "expert_id": "alice",
        "expert_name": "Alice Ng-Smith",
        "offers": 5,
        "accepted": 3,
        "declined": 1,
        "timed_out": 1,
        "handled": 3,
        "handle_time": 480.0,
        "available_time": 2550.0,
        "away_time": 900.0,
        "busy_time": 150.0,
        "utilization": 0.0556,
    },
    {
        "expert_id": "bob",
        "expert_name": "Bob Li",
        "offers": 2,
        "accepted": 2,
        "declined": 0,
        "timed_out": 0,
        "handled": 2,
        "handle_time": 110.0,
        "available_time": 2820.0,
        "away_time": 600.0,
        "busy_time": 60.0,
        "utilization": 0.0208,
    },
]
