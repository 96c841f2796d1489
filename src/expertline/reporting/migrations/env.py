"""Alembic environment of the reporting schema; its own chain and version table."""

from __future__ import annotations

from alembic import context

from expertline.reporting.tables import VERSION_TABLE, metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - always called through expertline.reporting.migrate
    raise RuntimeError("run migrations with `expertline db upgrade`")

context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
