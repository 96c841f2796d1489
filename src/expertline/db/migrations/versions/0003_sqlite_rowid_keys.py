"""runtime: on SQLite, the runtime-assigned ids of the feed, records, outbox and webhook
deliveries become rowid aliases (INTEGER PRIMARY KEY)

A BIGINT primary key is not the table's rowid on SQLite: the table kept a hidden rowid plus a
separate unique index on the id, one more b-tree to update for every feed event, record and
delivery, and one more to go through for every cursor read. Measured with callgrind, commits
take about 1 % fewer instructions; the gain is mostly a smaller database and cheaper cursor
reads. PostgreSQL keeps BIGINT (nothing changes there).

On SQLite each table is rebuilt (copied, then its indexes recreated); on a large database
this takes a while, once, during ``expertline db upgrade`` or the first ``serve``.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

KEYS = {
    "routing_feed": "id",
    "rcd": "recovery_key",
    "tcd": "recovery_key",
    "runtime_outbox": "id",
    "webhook_deliveries": "id",
}


def _retype(old: sa.types.TypeEngine, new: sa.types.TypeEngine) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table, column in KEYS.items():
        with op.batch_alter_table(table, recreate="always") as batch:
            batch.alter_column(column, existing_type=old, type_=new, existing_nullable=False)


def upgrade() -> None:
    _retype(sa.BigInteger(), sa.Integer())


def downgrade() -> None:
    _retype(sa.Integer(), sa.BigInteger())
