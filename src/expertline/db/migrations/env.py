"""Alembic environment: runs against the connection handed over by ``expertline.db.migrate``."""

from __future__ import annotations

from alembic import context

from expertline.db.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - always called through expertline.db.migrate
    raise RuntimeError("run migrations with `expertline db upgrade`")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
