"""reporting tables: tasks, offers, attempts, expert states, queue intervals, config history

Revision ID: r0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "r0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "report_cursors",
        sa.Column("consumer", sa.String(32), nullable=False),
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("consumer", name="pk_report_cursors"),
    )
    op.create_table(
        "report_tasks",
        sa.Column("task_id", sa.String(64), nullable=False),
        sa.Column("feed_id", sa.BigInteger, nullable=False),
        sa.Column("code", sa.String(32), nullable=False),
        sa.Column("external_id", sa.String(255)),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("queue_id", sa.String(255), nullable=False),
        sa.Column("queue_name", sa.String(255), nullable=False),
        sa.Column("queues", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("call_disposition", sa.Integer, nullable=False),
        sa.Column("expert_id", sa.String(255)),
        sa.Column("caller", sa.String(255)),
        sa.Column("dialed_number", sa.String(255)),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("assigned_at", TS),
        sa.Column("connected_at", TS),
        sa.Column("ended_at", TS, nullable=False),
        sa.Column("wait", sa.Float, nullable=False),
        sa.Column("ring_time", sa.Float, nullable=False),
        sa.Column("talk_time", sa.Float, nullable=False),
        sa.Column("work_time", sa.Float, nullable=False),
        sa.Column("sl_threshold", sa.Float, nullable=False),
        sa.Column("config_version", sa.Integer, nullable=False),
        sa.Column("node", sa.String(255), nullable=False),
        sa.PrimaryKeyConstraint("task_id", name="pk_report_tasks"),
    )
    op.create_index("ix_report_tasks_created_at", "report_tasks", ["created_at"])
    op.create_index("ix_report_tasks_queue_created", "report_tasks", ["queue_id", "created_at"])
    op.create_index("ix_report_tasks_expert_created", "report_tasks", ["expert_id", "created_at"])
    op.create_table(
        "report_offers",
        sa.Column("offer_id", sa.String(64), nullable=False),
        sa.Column("task_id", sa.String(64), nullable=False),
        sa.Column("expert_id", sa.String(255), nullable=False),
        sa.Column("queue_id", sa.String(255), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("ended_at", TS),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint("offer_id", name="pk_report_offers"),
    )
    op.create_index("ix_report_offers_task_id", "report_offers", ["task_id"])
    op.create_index("ix_report_offers_expert_created", "report_offers", ["expert_id", "created_at"])
    op.create_table(
        "report_attempts",
        sa.Column("task_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer, autoincrement=False, nullable=False),
        sa.Column("expert_id", sa.String(255), nullable=False),
        sa.Column("disposition", sa.Integer, nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.PrimaryKeyConstraint("task_id", "seq", name="pk_report_attempts"),
    )
    op.create_table(
        "report_expert_states",
        sa.Column("feed_id", sa.BigInteger, autoincrement=False, nullable=False),
        sa.Column("expert_id", sa.String(255), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("ended_at", TS),
        sa.Column("config_version", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("feed_id", name="pk_report_expert_states"),
    )
    op.create_index(
        "ix_report_expert_states_expert", "report_expert_states", ["expert_id", "started_at"]
    )
    op.create_index("ix_report_expert_states_started_at", "report_expert_states", ["started_at"])
    op.create_table(
        "report_queue_intervals",
        sa.Column("interval_start", TS, nullable=False),
        sa.Column("queue_id", sa.String(255), nullable=False),
        sa.Column("queue_name", sa.String(255), nullable=False),
        sa.Column("offered", sa.Integer, nullable=False),
        sa.Column("handled", sa.Integer, nullable=False),
        sa.Column("abandoned", sa.Integer, nullable=False),
        sa.Column("overflowed", sa.Integer, nullable=False),
        sa.Column("rejected", sa.Integer, nullable=False),
        sa.Column("wait_count", sa.Integer, nullable=False),
        sa.Column("wait_sum", sa.Float, nullable=False),
        sa.Column("wait_max", sa.Float, nullable=False),
        sa.Column("handled_within_sl", sa.Integer, nullable=False),
        sa.Column("abandoned_within_sl", sa.Integer, nullable=False),
        sa.Column("handle_time_sum", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("interval_start", "queue_id", name="pk_report_queue_intervals"),
    )
    op.create_table(
        "report_config_history",
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("object_id", sa.String(255), nullable=False),
        sa.Column("version_from", sa.Integer, autoincrement=False, nullable=False),
        sa.Column("version_to", sa.Integer),
        sa.Column("valid_from", TS, nullable=False),
        sa.Column("valid_to", TS),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("body", sa.JSON, nullable=False),
        sa.PrimaryKeyConstraint(
            "kind", "object_id", "version_from", name="pk_report_config_history"
        ),
    )


def downgrade() -> None:
    for table in (
        "report_config_history",
        "report_queue_intervals",
        "report_expert_states",
        "report_attempts",
        "report_offers",
        "report_tasks",
        "report_cursors",
    ):
        op.drop_table(table)
