"""``blocked_entries``: the entries the feeds' filters blocked, remembered by key.

A blocked entry never becomes an item; its key is kept here with the fingerprint of the
rules that blocked it, so later polls neither evaluate it again nor fetch its page while
the rules stay the same. Rows go with their feed (ON DELETE CASCADE) and are deleted once
their entry has left the feed's document. See docs/schema.md.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "blocked_entries",
        sa.Column(
            "feed_id",
            BigId,
            sa.ForeignKey("feeds.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("entry_key", sa.Text(), primary_key=True),
        sa.Column("rules_hash", sa.String(64), nullable=False),
        sa.Column("rule", sa.Text(), nullable=False),
        sa.Column("title", sa.Text(), nullable=True),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("blocked_at", TS, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("blocked_entries")
