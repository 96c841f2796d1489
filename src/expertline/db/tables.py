"""The runtime database schema (SQLAlchemy Core). Alembic migrations create and evolve it.

One metadata object; each part of the product owns the tables in its section. Timestamps are
UTC, stored as timezone-aware datetimes.
"""

from __future__ import annotations

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

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = MetaData(naming_convention=NAMING)

# BIGINT autoincrement is only an alias of ROWID on SQLite when declared INTEGER.
BigId = BigInteger().with_variant(Integer(), "sqlite")

# --- configuration -------------------------------------------------------------------------
# Every configuration object (attribute, expert, queue, entry point, presence source, message
# set) is one row; its body is the canonical JSON of the validated YAML object.
config_objects = Table(
    "config_objects",
    metadata,
    Column("kind", String(32), primary_key=True),
    Column("object_id", String(255), primary_key=True),
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
    Column("actor", String(255), nullable=False),
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
    Column("object_id", String(255), nullable=False),
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
    Column("name", String(255), nullable=False),
    Column("role", String(32), nullable=False),
    Column("token_hash", String(128), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
    UniqueConstraint("token_hash"),
)
Index("ix_api_tokens_name", api_tokens.c.name)
