"""runtime: routing state, event feed, RCD/TCD records, outbox, webhook deliveries

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "routing_feed",
        sa.Column("id", sa.BigInteger, autoincrement=False, nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("task_id", sa.String(64)),
        sa.Column("expert_id", sa.String(255)),
        sa.Column("data", sa.JSON, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_routing_feed"),
    )
    op.create_index("ix_routing_feed_type_id", "routing_feed", ["type", "id"])
    op.create_index("ix_routing_feed_task_id", "routing_feed", ["task_id"])

    op.create_table(
        "runtime_tasks",
        sa.Column("task_id", sa.String(64), nullable=False),
        sa.Column("code", sa.String(32), nullable=False),
        sa.Column("external_id", sa.String(255)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("queue_id", sa.String(255), nullable=False),
        sa.Column("expert_id", sa.String(255)),
        sa.Column("label", sa.Text),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("callback_url", sa.Text),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.Column("state", sa.JSON, nullable=False),
        sa.PrimaryKeyConstraint("task_id", name="pk_runtime_tasks"),
        sa.UniqueConstraint("external_id", name="uq_runtime_tasks_external_id"),
    )
    op.create_index("ix_runtime_tasks_active", "runtime_tasks", ["active"])

    op.create_table(
        "runtime_offers",
        sa.Column("offer_id", sa.String(64), nullable=False),
        sa.Column("task_id", sa.String(64), nullable=False),
        sa.Column("expert_id", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.Column("state", sa.JSON, nullable=False),
        sa.PrimaryKeyConstraint("offer_id", name="pk_runtime_offers"),
    )
    op.create_index("ix_runtime_offers_expert_id", "runtime_offers", ["expert_id", "status"])
    op.create_index("ix_runtime_offers_task_id", "runtime_offers", ["task_id"])

    op.create_table(
        "runtime_experts",
        sa.Column("expert_id", sa.String(255), nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.Column("state", sa.JSON, nullable=False),
        sa.PrimaryKeyConstraint("expert_id", name="pk_runtime_experts"),
    )

    op.create_table(
        "runtime_meta",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", sa.JSON, nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_runtime_meta"),
    )

    op.create_table(
        "rcd",
        sa.Column("recovery_key", sa.BigInteger, autoincrement=False, nullable=False),
        sa.Column("datetime", TZ, nullable=False),
        sa.Column("task_id", sa.String(64), nullable=False),
        sa.Column("peripheral_call_key", sa.String(32)),
        sa.Column("router_call_key", sa.String(255)),
        sa.Column("dialed_number", sa.String(255)),
        sa.Column("ani", sa.String(255)),
        sa.Column("label", sa.Text),
        sa.Column("expert_id", sa.String(255)),
        sa.Column("queue_id", sa.String(255)),
        sa.Column("node", sa.String(255), nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
        sa.PrimaryKeyConstraint("recovery_key", name="pk_rcd"),
    )
    op.create_index("ix_rcd_task_id", "rcd", ["task_id"])

    op.create_table(
        "tcd",
        sa.Column("recovery_key", sa.BigInteger, autoincrement=False, nullable=False),
        sa.Column("datetime", TZ, nullable=False),
        sa.Column("task_id", sa.String(64), nullable=False),
        sa.Column("peripheral_call_key", sa.String(32)),
        sa.Column("router_call_key", sa.String(255)),
        sa.Column("dialed_number", sa.String(255)),
        sa.Column("ani", sa.String(255)),
        sa.Column("call_disposition", sa.Integer, nullable=False),
        sa.Column("duration", sa.Float, nullable=False),
        sa.Column("delay_time", sa.Float, nullable=False),
        sa.Column("ring_time", sa.Float, nullable=False),
        sa.Column("talk_time", sa.Float, nullable=False),
        sa.Column("work_time", sa.Float, nullable=False),
        sa.Column("expert_id", sa.String(255)),
        sa.Column("queue_id", sa.String(255)),
        sa.Column("node", sa.String(255), nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
        sa.PrimaryKeyConstraint("recovery_key", name="pk_tcd"),
        sa.UniqueConstraint("task_id", name="uq_tcd_task_id"),
    )

    op.create_table(
        "runtime_outbox",
        sa.Column("id", sa.BigInteger, autoincrement=False, nullable=False),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("expert_id", sa.String(255), nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_runtime_outbox"),
    )

    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.BigInteger, autoincrement=False, nullable=False),
        sa.Column("task_id", sa.String(64), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("body", sa.JSON, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", TZ),
        sa.Column("delivered_at", TZ),
        sa.Column("failed_at", TZ),
        sa.Column("last_error", sa.Text),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_deliveries"),
    )
    op.create_index(
        "ix_webhook_deliveries_pending", "webhook_deliveries", ["delivered_at", "failed_at"]
    )


def downgrade() -> None:
    for table in (
        "webhook_deliveries",
        "runtime_outbox",
        "tcd",
        "rcd",
        "runtime_meta",
        "runtime_experts",
        "runtime_offers",
        "runtime_tasks",
        "routing_feed",
    ):
        op.drop_table(table)
