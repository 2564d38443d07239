"""Story deduplication: the fingerprint index, site shingle frequencies, story merges.

- ``dedup_bands``: one row per MinHash LSH band of an item's text (the candidate index);
  ``first_seen_at`` is copied from the item so a lookup is one index range per band within
  the dedup window.
- ``dedup_shingles``: per site (a hash of the host), how many stories contained each
  sampled "anchor" shingle: the learned discount for boilerplate.
- ``story_merges``: one row each time a later item showed two stories to be one.
- ``items.page_canonical_url`` (the page's rel=canonical / og:url, normalized) and
  ``items.dedup_item_id`` (the item a merge decision matched); ``stories.representative_item_id``
  (the earliest full version, whose title and URL the story shows).
- ``v_stories`` is recreated so its ``representative_item_id`` is that column.

Only ``ADD COLUMN`` on existing tables (no table rebuild on SQLite: the FTS triggers of
0002 stay in place).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)

V_STORIES = """
CREATE VIEW v_stories AS
SELECT
    s.id AS story_id,
    s.title,
    s.url,
    s.canonical_url,
    s.first_seen_at,
    s.last_seen_at,
    COALESCE(s.representative_item_id, agg.first_item_id) AS representative_item_id,
    agg.item_count,
    agg.source_count
FROM stories s
JOIN (
    SELECT
        story_id,
        MIN(id) AS first_item_id,
        COUNT(*) AS item_count,
        COUNT(DISTINCT feed_id) AS source_count
    FROM items
    WHERE story_id IS NOT NULL
    GROUP BY story_id
) agg ON agg.story_id = s.id
"""

V_STORIES_0002 = """
CREATE VIEW v_stories AS
SELECT
    s.id AS story_id,
    s.title,
    s.url,
    s.canonical_url,
    s.first_seen_at,
    s.last_seen_at,
    agg.representative_item_id,
    agg.item_count,
    agg.source_count
FROM stories s
JOIN (
    SELECT
        story_id,
        MIN(id) AS representative_item_id,
        COUNT(*) AS item_count,
        COUNT(DISTINCT feed_id) AS source_count
    FROM items
    WHERE story_id IS NOT NULL
    GROUP BY story_id
) agg ON agg.story_id = s.id
"""


def upgrade() -> None:
    op.add_column("items", sa.Column("page_canonical_url", sa.Text))
    op.add_column("items", sa.Column("dedup_item_id", BigId))
    op.create_index("ix_items_page_canonical_url", "items", ["page_canonical_url"])
    op.add_column("stories", sa.Column("representative_item_id", BigId))
    op.create_table(
        "dedup_bands",
        sa.Column("band", sa.BigInteger, nullable=False),
        sa.Column("first_seen_at", TS, nullable=False),
        sa.Column("item_id", BigId, sa.ForeignKey("items.id", ondelete="CASCADE"), nullable=False),
        sa.PrimaryKeyConstraint("band", "first_seen_at", "item_id", name="pk_dedup_bands"),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_dedup_bands_item_id", "dedup_bands", ["item_id"])
    op.create_table(
        "dedup_shingles",
        sa.Column("site", sa.BigInteger, nullable=False),
        sa.Column("shingle", sa.BigInteger, nullable=False),
        sa.Column("df", sa.Integer, nullable=False),
        sa.Column("last_seen_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("site", "shingle", name="pk_dedup_shingles"),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_dedup_shingles_last_seen_at", "dedup_shingles", ["last_seen_at"])
    op.create_table(
        "story_merges",
        sa.Column("id", BigId, primary_key=True),
        sa.Column(
            "story_id", BigId, sa.ForeignKey("stories.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("merged_story_id", BigId, nullable=False),
        sa.Column("item_id", BigId, sa.ForeignKey("items.id", ondelete="SET NULL")),
        sa.Column("score", sa.Float),
        sa.Column("reason", sa.String(32)),
        sa.Column("merged_at", TS, nullable=False),
        sa.Column("merged_title", sa.Text),
        sa.Column("merged_url", sa.Text),
        sa.Column("merged_first_seen_at", TS),
        sa.Column("merged_item_count", sa.Integer),
    )
    op.create_index("ix_story_merges_story_id", "story_merges", ["story_id"])
    op.create_index("ix_story_merges_merged_story_id", "story_merges", ["merged_story_id"])
    op.execute("DROP VIEW IF EXISTS v_stories")
    op.execute(V_STORIES)


def downgrade() -> None:
    # plain ALTER TABLE … DROP COLUMN (SQLite ≥ 3.35, PostgreSQL): a batch rebuild of a
    # table would trip over the views and the FTS triggers of 0002
    op.execute("DROP VIEW IF EXISTS v_stories")
    op.drop_table("story_merges")
    op.drop_table("dedup_shingles")
    op.drop_table("dedup_bands")
    op.drop_index("ix_items_page_canonical_url", table_name="items")
    op.execute("ALTER TABLE stories DROP COLUMN representative_item_id")
    op.execute("ALTER TABLE items DROP COLUMN dedup_item_id")
    op.execute("ALTER TABLE items DROP COLUMN page_canonical_url")
    op.execute(V_STORIES_0002)
