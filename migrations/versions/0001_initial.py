"""Initial schema: feeds, stories, items.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "feeds",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("url", sa.Text, nullable=False, unique=True),
        sa.Column("configured_url", sa.Text),
        sa.Column("name", sa.Text),
        sa.Column("type", sa.String(16), nullable=False, server_default="feed"),
        sa.Column("tags", sa.JSON),
        sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("full_text", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("interval_seconds", sa.Float),
        sa.Column("adaptive_interval_seconds", sa.Float),
        sa.Column("title", sa.Text),
        sa.Column("etag", sa.Text),
        sa.Column("last_modified", sa.Text),
        sa.Column("last_polled_at", TS),
        sa.Column("last_success_at", TS),
        sa.Column("last_status", sa.Integer),
        sa.Column("last_error", sa.Text),
        sa.Column("error_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_check_at", TS),
        sa.Column("hold_until", TS),
        sa.Column("disabled_reason", sa.Text),
        sa.Column("redirect_url", sa.Text),
        sa.Column("redirect_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("redirect_seen_at", TS),
        sa.Column("not_found_since", TS),
        sa.Column("host", sa.Text),
        sa.Column("lease_owner", sa.Text),
        sa.Column("lease_expires_at", TS),
        sa.Column("removed_at", TS),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_feeds_next_check_at", "feeds", ["next_check_at"])
    op.create_index("ix_feeds_host", "feeds", ["host"])
    op.create_table(
        "stories",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("title", sa.Text),
        sa.Column("url", sa.Text),
        sa.Column("canonical_url", sa.Text),
        sa.Column("first_seen_at", TS, nullable=False),
        sa.Column("last_seen_at", TS, nullable=False),
        sa.Column("item_count", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_index("ix_stories_first_seen_at", "stories", ["first_seen_at"])
    op.create_index("ix_stories_canonical_url", "stories", ["canonical_url"])
    op.create_table(
        "items",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("feed_id", BigId, sa.ForeignKey("feeds.id", ondelete="CASCADE"), nullable=False),
        sa.Column("entry_key", sa.Text, nullable=False),
        sa.Column("guid", sa.Text),
        sa.Column("url", sa.Text),
        sa.Column("canonical_url", sa.Text),
        sa.Column("title", sa.Text),
        sa.Column("author", sa.Text),
        sa.Column("published_at", TS),
        sa.Column("summary", sa.Text),
        sa.Column("content", sa.Text),
        sa.Column("text", sa.Text),
        sa.Column("text_source", sa.String(16)),
        sa.Column("language", sa.String(32)),
        sa.Column("image_url", sa.Text),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("story_id", BigId, sa.ForeignKey("stories.id", ondelete="SET NULL")),
        sa.Column("dedup_reason", sa.String(32)),
        sa.Column("dedup_score", sa.Float),
        sa.Column("first_seen_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.UniqueConstraint("feed_id", "entry_key", name="uq_items_feed_entry"),
    )
    op.create_index("ix_items_canonical_url", "items", ["canonical_url"])
    op.create_index("ix_items_story_id", "items", ["story_id"])
    op.create_index("ix_items_first_seen_at", "items", ["first_seen_at"])


def downgrade() -> None:
    op.drop_table("items")
    op.drop_table("stories")
    op.drop_table("feeds")
