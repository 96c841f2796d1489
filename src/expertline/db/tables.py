"""The runtime database schema (SQLAlchemy Core). Alembic migrations create and evolve it.

One metadata object; each part of the product owns the tables in its section. Timestamps are
UTC, stored as timezone-aware datetimes.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from expertline import limits
from expertline.db.conventions import NAMING, BigId

metadata = MetaData(naming_convention=NAMING)


# --- configuration -------------------------------------------------------------------------
# Every configuration object (attribute, expert, queue, entry point, presence source, message
# set) is one row; its body is the canonical JSON of the validated YAML object.
config_objects = Table(
    "config_objects",
    metadata,
    Column("kind", String(32), primary_key=True),
    Column("object_id", String(limits.ID.max_chars), primary_key=True),
    Column("position", Integer, nullable=False),
    Column("body", JSON, nullable=False),
    Column("version", Integer, nullable=False),
)

# One row per applied change set; the current version is the highest.
config_versions = Table(
    "config_versions",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("applied_at", DateTime(timezone=True), nullable=False),
    Column("actor", String(limits.ID.max_chars), nullable=False),
    Column("source", String(64), nullable=False),
    Column("summary", Text, nullable=False),
)

# What each version changed, object by object (before/after bodies; null = absent).
config_changes = Table(
    "config_changes",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("version", Integer, nullable=False, index=True),
    Column("kind", String(32), nullable=False),
    Column("object_id", String(limits.ID.max_chars), nullable=False),
    Column("op", String(8), nullable=False),
    Column("before", JSON),
    Column("after", JSON),
)
Index("ix_config_changes_object", config_changes.c.kind, config_changes.c.object_id)

# --- security ------------------------------------------------------------------------------
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(limits.ID.max_chars), nullable=False),
    Column("role", String(32), nullable=False),
    Column("token_hash", String(128), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
    Column("expert_id", String(255)),  # an ``expert`` token acts for this expert only
    UniqueConstraint("token_hash"),
)
Index("ix_api_tokens_name", api_tokens.c.name)

# --- runtime: routing state, feed, records, outbox -----------------------------------------
# Text widths come from ``expertline.limits``, the table the edges check values against, so a
# value accepted at an edge always fits. ``dialed_number`` columns are ``ID`` wide (255), wider
# than the 128 characters an entry point may have.
# The active runtime node is the only writer of these tables. It assigns ``id`` and
# ``recovery_key`` values itself (ascending, from the highest stored at start), so ids ascend in
# commit order and a reader's cursor never skips a row that commits later. On SQLite these
# keys are INTEGER, i.e. the rowid itself (no separate index to maintain); BIGINT elsewhere.
from sqlalchemy import Boolean, Float  # noqa: E402

# Every transition, in order (see expertline.records.feed).
routing_feed = Table(
    "routing_feed",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=False),
    Column("type", String(64), nullable=False),
    Column("task_id", String(limits.TASK_ID.max_chars)),
    Column("expert_id", String(limits.ID.max_chars)),
    Column("data", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
Index("ix_routing_feed_type_id", routing_feed.c.type, routing_feed.c.id)
Index("ix_routing_feed_task_id", routing_feed.c.task_id)

# Current state of each task (in flight and ended). ``state`` is the routing core's export;
# the other columns are for queries and the API.
runtime_tasks = Table(
    "runtime_tasks",
    metadata,
    Column("task_id", String(limits.TASK_ID.max_chars), primary_key=True),
    Column("code", String(limits.CODE.max_chars), nullable=False),
    Column("external_id", String(limits.EXTERNAL_ID.max_chars)),
    Column("status", String(16), nullable=False),
    Column("active", Boolean, nullable=False),
    Column("queue_id", String(limits.ID.max_chars), nullable=False),
    Column("expert_id", String(limits.ID.max_chars)),
    Column("label", Text),
    Column("origin", String(16), nullable=False),
    Column("callback_url", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("state", JSON, nullable=False),
    UniqueConstraint("external_id"),
)
Index("ix_runtime_tasks_active", runtime_tasks.c.active)

# Current state of each offer.
runtime_offers = Table(
    "runtime_offers",
    metadata,
    Column("offer_id", String(limits.TASK_ID.max_chars), primary_key=True),
    Column("task_id", String(limits.TASK_ID.max_chars), nullable=False),
    Column("expert_id", String(limits.ID.max_chars), nullable=False),
    Column("status", String(16), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("state", JSON, nullable=False),
)
Index("ix_runtime_offers_expert_id", runtime_offers.c.expert_id, runtime_offers.c.status)
Index("ix_runtime_offers_task_id", runtime_offers.c.task_id)

# Current state of each expert the core has seen (presence, load, wrap-up, idle since...).
runtime_experts = Table(
    "runtime_experts",
    metadata,
    Column("expert_id", String(limits.ID.max_chars), primary_key=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("state", JSON, nullable=False),
)

# Small named values of the runtime (e.g. the core's counters).
runtime_meta = Table(
    "runtime_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", JSON, nullable=False),
)


def _call_detail_head() -> list[Column[Any]]:
    """The leading columns of both call detail records (RCD and TCD): which record, when, and
    which call; new columns each time, as a column belongs to one table."""
    return [
        Column("recovery_key", BigId, primary_key=True, autoincrement=False),
        Column("datetime", DateTime(timezone=True), nullable=False),
        Column("task_id", String(limits.TASK_ID.max_chars), nullable=False),
        Column("peripheral_call_key", String(limits.CODE.max_chars)),
        Column("router_call_key", String(limits.EXTERNAL_ID.max_chars)),
        Column("dialed_number", String(limits.ID.max_chars)),
        Column("ani", String(limits.CALLER.max_chars)),
    ]


def _call_detail_tail() -> list[Column[Any]]:
    """The trailing columns of both call detail records: the expert and queue, the node that
    wrote the record, and the record's data."""
    return [
        Column("expert_id", String(limits.ID.max_chars)),
        Column("queue_id", String(limits.ID.max_chars)),
        Column("node", String(limits.ID.max_chars), nullable=False),
        Column("data", JSON, nullable=False),
    ]


# Route call detail: one row per label returned.
rcd = Table(
    "rcd",
    metadata,
    *_call_detail_head(),
    Column("label", Text),
    *_call_detail_tail(),
)
Index("ix_rcd_task_id", rcd.c.task_id)

# Termination call detail: exactly one row per task (the unique task_id enforces it).
tcd = Table(
    "tcd",
    metadata,
    *_call_detail_head(),
    Column("call_disposition", Integer, nullable=False),
    Column("duration", Float, nullable=False),
    Column("delay_time", Float, nullable=False),
    Column("ring_time", Float, nullable=False),
    Column("talk_time", Float, nullable=False),
    Column("work_time", Float, nullable=False),
    *_call_detail_tail(),
    UniqueConstraint("task_id"),
)

# Effects for expert channels (offer texts, withdrawals, confirmations, notices), written with
# the transition that caused them, removed once performed.
runtime_outbox = Table(
    "runtime_outbox",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=False),
    Column("channel", String(64), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("expert_id", String(limits.ID.max_chars), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# Task status notifications to routing clients' ``callback_url``, retried with backoff.
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=False),
    Column("task_id", String(limits.TASK_ID.max_chars), nullable=False),
    Column("url", Text, nullable=False),
    Column("body", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", DateTime(timezone=True)),
    Column("delivered_at", DateTime(timezone=True)),
    Column("failed_at", DateTime(timezone=True)),
    Column("last_error", Text),
)
Index(
    "ix_webhook_deliveries_pending",
    webhook_deliveries.c.delivered_at,
    webhook_deliveries.c.failed_at,
)

# --- high availability ---------------------------------------------------------------------
# The runtime lease (one row, ``name = 'runtime'``): the node that holds it is the active one.
# ``token`` grows by one at every acquisition and fences the writes of a node that lost it.
# Times come from the database's clock, so the nodes' own clocks do not matter.
ha_lease = Table(
    "ha_lease",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("holder", String(limits.ID.max_chars)),
    Column("token", BigInteger, nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("acquired_at", DateTime(timezone=True)),
)

# --- web: people who sign in, their sessions, the nodes serving pages -----------------------
# Users of the web pages (admins, supervisors, report readers, experts). Only an argon2 hash of
# each password is kept; an ``expert`` user is bound to one expert of the configuration.
web_users = Table(
    "web_users",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("username", String(64), nullable=False),
    Column("role", String(32), nullable=False),
    Column("expert_id", String(255)),
    Column("password_hash", String(255), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("disabled_at", DateTime(timezone=True)),
    UniqueConstraint("username"),
)

# Signed-in browsers. The cookie holds a random key; only its SHA-256 is stored. A session is
# of a user or of an API token (``principal``), and carries its CSRF token.
web_sessions = Table(
    "web_sessions",
    metadata,
    Column("key_hash", String(64), primary_key=True),
    Column("principal", String(8), nullable=False),  # user | token
    Column("principal_id", Integer, nullable=False),
    Column("name", String(255), nullable=False),
    Column("role", String(32), nullable=False),
    Column("expert_id", String(255)),
    Column("csrf", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("seen_at", DateTime(timezone=True), nullable=False),
)
Index("ix_web_sessions_principal", web_sessions.c.principal, web_sessions.c.principal_id)

# Each node serving pages says every few seconds where it is and how it is (active or
# standby, presence links), so every node's pages can show the pair and link to the active one.
web_nodes = Table(
    "web_nodes",
    metadata,
    Column("node", String(255), primary_key=True),
    Column("url", Text, nullable=False),
    Column("role", String(16), nullable=False),
    Column("active", Boolean, nullable=False),
    Column("components", JSON, nullable=False),
    Column("seen_at", DateTime(timezone=True), nullable=False),
)
