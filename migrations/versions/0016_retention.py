"""Retention (issue 19): each feed's current document, tombstones, an index by feed and age.

- ``feed_documents``: the entry keys of the document each feed's last poll read (a JSON
  array, one row per feed), written by the save path in the poll's transaction. Retention
  never deletes an item whose entry is in it.
- ``item_tombstones``: the entries whose items retention deleted while their feed still
  served them, so a later poll does not store them again as new; a tombstone is dropped
  once its entry has left the feed's document.
- ``ix_items_feed_first_seen`` (feed_id, first_seen_at): a feed's oldest items, and its
  newest N, read from the index.
- Every feed loses its validators (etag, Last-Modified): its next poll gets the whole
  document (not a 304), so that its current document is recorded. Until then retention
  deletes nothing from the feed.

SQLite's ``auto_vacuum=INCREMENTAL`` is not set here: a file made before it needs a
``VACUUM`` to change it, which cannot run inside a migration's transaction and rewrites
the whole file. New files get it when created (``store/engine.py``); an existing file is
converted by its first retention pass (``store/retention.py``, see docs/operations.md).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "feed_documents",
        sa.Column(
            "feed_id", BigId, sa.ForeignKey("feeds.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("entry_keys", sa.Text(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "item_tombstones",
        sa.Column(
            "feed_id", BigId, sa.ForeignKey("feeds.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("entry_key", sa.Text(), primary_key=True),
        sa.Column("deleted_at", TS, nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_items_feed_first_seen", "items", ["feed_id", "first_seen_at"])
    op.execute(
        "UPDATE feeds SET etag = NULL, last_modified = NULL"
        " WHERE etag IS NOT NULL OR last_modified IS NOT NULL"
    )


def downgrade() -> None:
    op.drop_index("ix_items_feed_first_seen", table_name="items")
    op.drop_table("item_tombstones")
    op.drop_table("feed_documents")
