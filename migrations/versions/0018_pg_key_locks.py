"""PostgreSQL: the dedup locks of a poll become one row per key, not a shared stripe.

Since 0015 a poll saving new items locked the rows of ``dedup_lock_stripes`` that its
keys hash to (each new entry's 20 LSH band keys, its site, its canonical URLs): about 650
keys for a cold poll of 30 entries, on 65 536 stripes. Two such polls share a stripe with
probability 1 − exp(−650² / 65 536) ≈ 99.8 %, so cold saves took turns nearly always,
whatever their keys: 83–93 % of their time was that wait, and a second daemon added
1.09–1.12× (docs/performance.md, "Issue 18 item 5, built").

Now each key is its own row of ``dedup_key_locks``, made when first locked: the poll runs
``INSERT … ON CONFLICT (key) DO UPDATE … WHERE false`` over its keys in ascending order,
which inserts the missing keys and locks the present ones without writing them (a
conflicting row is locked even when the update's condition is false). A second poll
wanting one of those keys waits, whether the first inserted it or locked it; polls with no
key in common do not wait at all. Still row locks, kept in the rows, so a poll of
thousands of keys never fills PostgreSQL's shared lock table (the reason for 0015). The
daemon's dedup prune (every 6 hours) deletes the rows nobody holds (``FOR UPDATE SKIP
LOCKED``); a later poll makes them again.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

STRIPES = 65536  # 0015's table, for the downgrade


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("CREATE TABLE dedup_key_locks (key bigint PRIMARY KEY)")
    op.execute("DROP TABLE dedup_lock_stripes")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("CREATE TABLE dedup_lock_stripes (id integer PRIMARY KEY)")
    op.execute(f"INSERT INTO dedup_lock_stripes (id) SELECT generate_series(0, {STRIPES - 1})")
    op.execute("DROP TABLE dedup_key_locks")
