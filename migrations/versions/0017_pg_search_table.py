"""PostgreSQL: full-text search from a stored vector, indexed in batches after the insert.

Until now PostgreSQL searched with a GIN index on the expression
``to_tsvector('simple', left(title || ' ' || text, 100000))`` (migration 0002). Two
faults, both measured (docs/performance.md, "Issue 18 item 5"):

- computing that vector was about three quarters of an item insert's cost, inside the
  save's transaction (which holds the dedup stripe locks other daemons wait on);
- the planner often chose the ``first_seen_at`` index for a newest-first listing and
  recomputed the vector of each row it walked: seconds per search at 5,000 items.

Now, as on SQLite since 0014, an insert only queues the item's id (``search_queue``, by
a statement trigger); the save path indexes the queued items in batches a few seconds
later (``store.search.index_queued``): it takes queued ids ``FOR UPDATE SKIP LOCKED``
(several daemons index at once without waiting on each other), computes their vectors
into ``item_search`` (its own GIN index) and deletes them from the queue. An item whose
title or text changes gets its new vector at once, in the update's transaction (a row
trigger; changes are rare beside inserts), so search follows updates as it does on
SQLite. Deleting an item deletes its vector (foreign key); a queued id whose item is
gone is dropped by the next batch. Searches read ``item_search``: a stored vector is
never recomputed.

This migration computes the vector of every item already stored (the same cost per item
as an insert paid until now, once), then drops the expression index.

SQLite: nothing (0014 did the same there).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

# The text-search vector of an item (the expression of migration 0002, unqualified).
VECTOR = (
    "to_tsvector('simple'::regconfig, "
    "left(coalesce(title, '') || ' ' || coalesce(text, ''), 100000))"
)

UPGRADE = (
    "CREATE TABLE search_queue (item_id bigint PRIMARY KEY)",
    "CREATE TABLE item_search ("
    " item_id bigint PRIMARY KEY REFERENCES items(id) ON DELETE CASCADE,"
    " vector tsvector NOT NULL)",
    """
    CREATE FUNCTION items_search_queue_new() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO search_queue(item_id) SELECT id FROM new_items ON CONFLICT DO NOTHING;
        RETURN NULL;
    END $$
    """,
    "CREATE TRIGGER items_search_ai AFTER INSERT ON items"
    " REFERENCING NEW TABLE AS new_items FOR EACH STATEMENT"
    " EXECUTE FUNCTION items_search_queue_new()",
    """
    CREATE FUNCTION items_search_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO item_search(item_id, vector) VALUES (NEW.id, {NEW_VECTOR})
        ON CONFLICT (item_id) DO UPDATE SET vector = excluded.vector;
        RETURN NULL;
    END $$
    """.format(NEW_VECTOR=VECTOR.replace("(title", "(NEW.title").replace("(text", "(NEW.text")),
    # (a column list and a transition table cannot go together: a row trigger here)
    "CREATE TRIGGER items_search_au AFTER UPDATE OF title, text ON items FOR EACH ROW"
    " WHEN (OLD.title IS DISTINCT FROM NEW.title OR OLD.text IS DISTINCT FROM NEW.text)"
    " EXECUTE FUNCTION items_search_changed()",
    f"INSERT INTO item_search (item_id, vector) SELECT id, {VECTOR} FROM items",
    "CREATE INDEX ix_item_search ON item_search USING GIN (vector)",
    "DROP INDEX IF EXISTS ix_items_search",
)
DOWNGRADE = (
    f"CREATE INDEX IF NOT EXISTS ix_items_search ON items USING GIN (({VECTOR}))",
    "DROP TRIGGER IF EXISTS items_search_au ON items",
    "DROP TRIGGER IF EXISTS items_search_ai ON items",
    "DROP FUNCTION IF EXISTS items_search_changed()",
    "DROP FUNCTION IF EXISTS items_search_queue_new()",
    "DROP TABLE IF EXISTS item_search",
    "DROP TABLE IF EXISTS search_queue",
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for statement in DOWNGRADE:
        op.execute(statement)
