"""runtime: the high-availability lease (one row): its holder is the active runtime node

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    lease = op.create_table(
        "ha_lease",
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("holder", sa.String(255)),
        sa.Column("token", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("name", name="pk_ha_lease"),
    )
    op.bulk_insert(
        lease,
        [
            {
                "name": "runtime",
                "holder": None,
                "token": 0,
                "expires_at": datetime(1970, 1, 1, tzinfo=UTC),
            }
        ],
    )


def downgrade() -> None:
    op.drop_table("ha_lease")
