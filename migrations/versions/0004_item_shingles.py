"""items.shingles: each item's text shingle hashes, so dedup verifies a candidate without
recomputing them from its text.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # a plain ADD COLUMN (no table rebuild on SQLite: the search triggers of 0002 stay)
    op.add_column("items", sa.Column("shingles", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("items") as batch:
        batch.drop_column("shingles")
