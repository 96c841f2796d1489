"""The reporting database schema (SQLAlchemy Core), separate from the runtime's.

Reporting may live in its own database (``reporting_db``), so it has its own metadata and its
own Alembic chain (``expertline.reporting.migrations``, version table
``reporting_alembic_version``). Every table is prefixed ``report_`` so the two schemas can also
share one database without colliding. ``docs/reporting.md`` documents these tables for SQL and
BI users; keep the two in step.

Timestamps are UTC. Durations are seconds (float).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
)

from expertline.db.conventions import NAMING

metadata = MetaData(naming_convention=NAMING)

VERSION_TABLE = "reporting_alembic_version"

# Where each consumer stopped. ``feed`` = last ``routing_feed.id`` ingested, ``config`` = last
# configuration version copied. Updated in the same transaction as the rows it covers.
report_cursors = Table(
    "report_cursors",
    metadata,
    Column("consumer", String(32), primary_key=True),
    Column("position", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# One row per ended task (from its ``task.record``).
report_tasks = Table(
    "report_tasks",
    metadata,
    Column("task_id", String(64), primary_key=True),
    Column("feed_id", BigInteger, nullable=False),
    Column("code", String(32), nullable=False),
    Column("external_id", String(255)),
    Column("channel", String(16), nullable=False),
    Column("queue_id", String(255), nullable=False),
    Column("queue_name", String(255), nullable=False),
    Column("queues", JSON, nullable=False),
    Column("status", String(16), nullable=False),
    Column("call_disposition", Integer, nullable=False),
    Column("expert_id", String(255)),
    Column("caller", String(255)),
    Column("dialed_number", String(255)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("assigned_at", DateTime(timezone=True)),
    Column("connected_at", DateTime(timezone=True)),
    Column("ended_at", DateTime(timezone=True), nullable=False),
    Column("wait", Float, nullable=False),
    Column("ring_time", Float, nullable=False),
    Column("talk_time", Float, nullable=False),
    Column("work_time", Float, nullable=False),
    Column("sl_threshold", Float, nullable=False),
    Column("config_version", Integer, nullable=False),
    Column("node", String(255), nullable=False),
)
Index("ix_report_tasks_created_at", report_tasks.c.created_at)
Index("ix_report_tasks_queue_created", report_tasks.c.queue_id, report_tasks.c.created_at)
Index("ix_report_tasks_expert_created", report_tasks.c.expert_id, report_tasks.c.created_at)

# Each IM offer of a task to an expert.
report_offers = Table(
    "report_offers",
    metadata,
    Column("offer_id", String(64), primary_key=True),
    Column("task_id", String(64), nullable=False),
    Column("expert_id", String(255), nullable=False),
    Column("queue_id", String(255), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("ended_at", DateTime(timezone=True)),
    Column("outcome", String(16), nullable=False),
)
Index("ix_report_offers_task_id", report_offers.c.task_id)
Index("ix_report_offers_expert_created", report_offers.c.expert_id, report_offers.c.created_at)

# Deliveries that failed and requeued the task (SIP proxy: 19 ring no answer, 8 busy).
report_attempts = Table(
    "report_attempts",
    metadata,
    Column("task_id", String(64), primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("expert_id", String(255), nullable=False),
    Column("disposition", Integer, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
)

# Expert state intervals: [started_at, ended_at); ended_at is null while the state lasts.
report_expert_states = Table(
    "report_expert_states",
    metadata,
    Column("feed_id", BigInteger, primary_key=True, autoincrement=False),
    Column("expert_id", String(255), nullable=False),
    Column("state", String(16), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("ended_at", DateTime(timezone=True)),
    Column("config_version", Integer, nullable=False),
)
Index(
    "ix_report_expert_states_expert",
    report_expert_states.c.expert_id,
    report_expert_states.c.started_at,
)
Index("ix_report_expert_states_started_at", report_expert_states.c.started_at)
# Each expert's open state (at most one row each), which every state change closes.
Index(
    "ix_report_expert_states_open",
    report_expert_states.c.expert_id,
    postgresql_where=report_expert_states.c.ended_at.is_(None),
    sqlite_where=report_expert_states.c.ended_at.is_(None),
)

# Queue figures per 15-minute interval (by task arrival), maintained at ingestion; 30- and
# 60-minute reports add these up. Sums and counts, so any average can be derived.
report_queue_intervals = Table(
    "report_queue_intervals",
    metadata,
    Column("interval_start", DateTime(timezone=True), primary_key=True),
    Column("queue_id", String(255), primary_key=True),
    Column("queue_name", String(255), nullable=False),
    Column("offered", Integer, nullable=False),
    Column("handled", Integer, nullable=False),
    Column("abandoned", Integer, nullable=False),
    Column("overflowed", Integer, nullable=False),
    Column("rejected", Integer, nullable=False),
    Column("wait_count", Integer, nullable=False),
    Column("wait_sum", Float, nullable=False),
    Column("wait_max", Float, nullable=False),
    Column("handled_within_sl", Integer, nullable=False),
    Column("abandoned_within_sl", Integer, nullable=False),
    Column("handle_time_sum", Float, nullable=False),
)

# Configuration history: each object's body over a range of config versions
# [version_from, version_to), with the times those versions were applied.
report_config_history = Table(
    "report_config_history",
    metadata,
    Column("kind", String(32), primary_key=True),
    Column("object_id", String(255), primary_key=True),
    Column("version_from", Integer, primary_key=True, autoincrement=False),
    Column("version_to", Integer),
    Column("valid_from", DateTime(timezone=True), nullable=False),
    Column("valid_to", DateTime(timezone=True)),
    Column("name", String(255), nullable=False),
    Column("body", JSON, nullable=False),
)
