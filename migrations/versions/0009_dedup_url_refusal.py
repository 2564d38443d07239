"""``items.dedup_url_refusal``: why an item's canonical URL was not taken as its identity
(shared by several entries of its feed document, a site's front page, a URL of another
entry of the same feed, or contradicted by the content); NULL when it was, or when the
item was stored before this revision. ``aggregator stories explain`` shows it.

Revision ID: 0009
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("items", sa.Column("dedup_url_refusal", sa.Text(), nullable=True))


def downgrade() -> None:
    # a plain DROP COLUMN on both databases (SQLite 3.35+): a batch rebuild of ``items``
    # would break the views and search triggers of 0002
    op.execute("ALTER TABLE items DROP COLUMN dedup_url_refusal")
