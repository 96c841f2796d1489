"""tokens: an ``expert`` token names the one expert it acts for

Additive: a nullable ``api_tokens.expert_id``. Expert tokens made before this revision have
none and are refused by the presence and offer endpoints until replaced by a bound one
(``expertline tokens create NAME --role expert --expert EXPERT_ID``).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("api_tokens", sa.Column("expert_id", sa.String(255)))


def downgrade() -> None:
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_column("expert_id")
