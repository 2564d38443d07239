"""SQLite: the full-text index merges its segments 16 at a time instead of 4 (issue 18).

FTS5 writes each indexing batch as a new segment and, by default, merges four segments
of one level into one of the next (``automerge=4``): every indexed term is written again
at each level, and with the store's size the number of levels grows, so a cold run's
indexing cost per item grows too. With ``automerge=16`` the levels are half as many
(log16 instead of log4 of the segments): measured on the 2,000-feed store replay, the
writer's CPU per item fell from 2.35–2.46 ms to 2.05–2.21 ms (docs/performance.md, "Issue
18, fifth session"). Searches read up to 16 segments per level instead of 4: the same
queries on the two replayed stores took the same time within noise, and the retention
pass still merges the whole index (``compact_search_index``).

The setting is FTS5's own, kept in ``items_fts_config``: the table and its columns do not
change for readers (datasette, sqlite-utils). PostgreSQL has no FTS5 table: nothing to do
there.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

AUTOMERGE = 16
DEFAULT = 4  # FTS5's own default, for the downgrade


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute(f"INSERT INTO items_fts(items_fts, rank) VALUES ('automerge', {AUTOMERGE})")


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute(f"INSERT INTO items_fts(items_fts, rank) VALUES ('automerge', {DEFAULT})")
