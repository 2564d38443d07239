"""PostgreSQL: the dedup locks of a poll become row locks on a fixed table of stripes.

A poll saved on PostgreSQL locks what its dedup decisions read (each new entry's LSH band
keys, its site, its canonical URLs), so two polls deciding about copies of one story take
turns. Those locks were transaction-level advisory locks, one per key: 20 band keys per
entry, so a feed of 300 new entries took over 6 000 of them, and PostgreSQL keeps advisory
locks in its shared lock table (``max_locks_per_transaction`` × ``max_connections`` = 6 400
slots by default). Such a poll, or a few large ones at once, failed with "out of shared
memory", every time: a large feed could never be saved on PostgreSQL.

Row locks (``SELECT … FOR UPDATE``) are kept in the rows themselves, not in that table, so
their number is not bounded by it. Each key maps to one of ``STRIPES`` rows (its hash
modulo 65 536); two keys sharing a stripe only make their polls take turns, which is what
a lock on either would do. Locked in ascending order, as the advisory locks were.

SQLite has one writer at a time and needs no such table.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

STRIPES = 65536


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("CREATE TABLE dedup_lock_stripes (id integer PRIMARY KEY)")
    op.execute(f"INSERT INTO dedup_lock_stripes (id) SELECT generate_series(0, {STRIPES - 1})")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TABLE dedup_lock_stripes")
