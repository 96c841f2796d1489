"""report_expert_states: a partial index on the open state of each expert

Each ingested state change closes the expert's open state. Without this index that update
scans every state the expert ever had, so ingestion got slower as the table grew.

Revision ID: r0002
Revises: r0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "r0002"
down_revision = "r0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    open_state = sa.text("ended_at IS NULL")
    op.create_index(
        "ix_report_expert_states_open",
        "report_expert_states",
        ["expert_id"],
        postgresql_where=open_state,
        sqlite_where=open_state,
    )


def downgrade() -> None:
    op.drop_index("ix_report_expert_states_open", table_name="report_expert_states")
