"""An index in the exact order workers claim due feeds (next_check_at NULLS FIRST, id), so a
claim reads the first rows of the index instead of sorting every due feed.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.create_index("ix_feeds_due", "feeds", [sa.text("next_check_at ASC NULLS FIRST"), "id"])
    else:  # SQLite sorts NULLs first in ascending order already
        op.create_index("ix_feeds_due", "feeds", ["next_check_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_feeds_due", table_name="feeds")
