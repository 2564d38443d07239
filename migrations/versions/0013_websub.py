"""WebSub subscriptions (push): ``websub_subscriptions``, one row per feed whose document
declared a hub, and ``feeds.push_until``, the lease end of the feed's live subscription
(while in the future the feed is polled only as a safety net). See docs/push.md.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "websub_subscriptions",
        sa.Column("id", BigId, primary_key=True),
        sa.Column(
            "feed_id",
            BigId,
            sa.ForeignKey("feeds.id", ondelete="CASCADE"),
            nullable=False,
            unique=True,
        ),
        sa.Column("hub", sa.Text(), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("callback_id", sa.String(64), nullable=False, unique=True),
        sa.Column("secret", sa.String(128), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("request_mode", sa.String(16)),
        sa.Column("requested_at", TS),
        sa.Column("lease_seconds", sa.Integer()),
        sa.Column("lease_expires_at", TS),
        sa.Column("next_attempt_at", TS),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text()),
        sa.Column("last_push_at", TS),
        sa.Column("claim_owner", sa.Text()),
        sa.Column("claim_expires_at", TS),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_index(
        "ix_websub_subscriptions_next_attempt_at", "websub_subscriptions", ["next_attempt_at"]
    )
    op.add_column("feeds", sa.Column("push_until", TS, nullable=True))


def downgrade() -> None:
    # a plain DROP COLUMN (SQLite 3.35+): a batch rebuild of ``feeds`` is not needed
    op.execute("ALTER TABLE feeds DROP COLUMN push_until")
    op.drop_index("ix_websub_subscriptions_next_attempt_at", table_name="websub_subscriptions")
    op.drop_table("websub_subscriptions")
