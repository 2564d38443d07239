"""SQLite: full-text indexing leaves the item insert's transaction (issue 18).

Until now a trigger indexed every new item in ``items_fts`` inside the transaction that
inserted it: a quarter of the store writer's CPU in a cold run (tokenizing each text on
its own). Now an insert only queues the item's id in ``search_queue``; the indexer
(``store.search.index_queued``) indexes the queued items in batches, with one
``INSERT … SELECT``, a few seconds later (the save path runs it after its commits, and
before it stops). The update and delete triggers touch the index only for items it
holds: an item still queued has nothing there yet, and is indexed with its values of
that moment.

PostgreSQL has no FTS table (its GIN expression index of migration 0002 follows every
insert by itself): nothing to do there.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

QUEUED = "EXISTS (SELECT 1 FROM search_queue WHERE item_id = {row}.id)"
TRIGGERS = (
    """
    CREATE TRIGGER items_fts_ai AFTER INSERT ON items BEGIN
        INSERT OR IGNORE INTO search_queue(item_id) VALUES (new.id);
    END
    """,
    f"""
    CREATE TRIGGER items_fts_ad AFTER DELETE ON items BEGIN
        INSERT INTO items_fts(items_fts, rowid, title, text)
        SELECT 'delete', old.id, old.title, old.text WHERE NOT {QUEUED.format(row="old")};
        DELETE FROM search_queue WHERE item_id = old.id;
    END
    """,
    f"""
    CREATE TRIGGER items_fts_au AFTER UPDATE OF title, text ON items
    WHEN NOT {QUEUED.format(row="old")} BEGIN
        INSERT INTO items_fts(items_fts, rowid, title, text)
        VALUES ('delete', old.id, old.title, old.text);
        INSERT INTO items_fts(rowid, title, text) VALUES (new.id, new.title, new.text);
    END
    """,
)
# migration 0007's triggers, for the downgrade
INLINE = (
    """
    CREATE TRIGGER items_fts_ai AFTER INSERT ON items BEGIN
        INSERT INTO items_fts(rowid, title, text) VALUES (new.id, new.title, new.text);
    END
    """,
    """
    CREATE TRIGGER items_fts_ad AFTER DELETE ON items BEGIN
        INSERT INTO items_fts(items_fts, rowid, title, text)
        VALUES ('delete', old.id, old.title, old.text);
    END
    """,
    """
    CREATE TRIGGER items_fts_au AFTER UPDATE OF title, text ON items BEGIN
        INSERT INTO items_fts(items_fts, rowid, title, text)
        VALUES ('delete', old.id, old.title, old.text);
        INSERT INTO items_fts(rowid, title, text) VALUES (new.id, new.title, new.text);
    END
    """,
)
NAMES = ("items_fts_ai", "items_fts_ad", "items_fts_au")


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute("CREATE TABLE search_queue (item_id INTEGER PRIMARY KEY)")
    for name in NAMES:
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
    for statement in TRIGGERS:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    # what is still queued is indexed first: the inline triggers assume every row is
    op.execute(
        "INSERT INTO items_fts(rowid, title, text) SELECT i.id, i.title, i.text"
        " FROM items AS i JOIN search_queue AS q ON q.item_id = i.id"
    )
    for name in NAMES:
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
    for statement in INLINE:
        op.execute(statement)
    op.execute("DROP TABLE search_queue")
