"""Per-key rate limits (None: the deployment's defaults).

Revision ID: 0002_key_rate_limits
Revises: 0001_accounts
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_key_rate_limits"
down_revision = "0001_accounts"
branch_labels = None
depends_on = None

COLUMNS = ("rate_limit_requests", "rate_limit_tokens", "rate_limit_concurrency")


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as table:
        for name in COLUMNS:
            table.add_column(sa.Column(name, sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as table:
        for name in COLUMNS:
            table.drop_column(name)
