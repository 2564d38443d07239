"""Read-only views (v_items, v_stories) and full-text search over item titles and text.

SQLite: an FTS5 table ``items_fts`` (external content = ``items``) kept in sync by
triggers. PostgreSQL: a GIN index on ``to_tsvector('simple', title || ' ' || text)``
(the first 100 000 characters);
queries must use exactly that expression (see ``aggregator.store.queries``).

Note for later migrations on SQLite: a batch operation that *recreates* ``items``
(move-and-copy) drops the ``items_fts_*`` triggers and invalidates the views; such a
migration must drop the views first and call ``create_sqlite_fts_triggers`` /
recreate the views afterwards.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# The one text-search expression (PostgreSQL); aggregator.store.queries.PG_SEARCH_VECTOR
# must stay identical, or the index is not used.
# (capped at 100 000 characters: a tsvector must stay under 1 MB, and an item's insert
# must never fail because of its index)
PG_SEARCH_VECTOR = (
    "to_tsvector('simple'::regconfig, "
    "left(coalesce(title, '') || ' ' || coalesce(text, ''), 100000))"
)

V_ITEMS = """
CREATE VIEW v_items AS
SELECT
    i.id AS item_id,
    i.story_id,
    i.feed_id,
    f.name AS feed_name,
    f.url AS feed_url,
    f.title AS feed_title,
    i.guid,
    i.url,
    i.canonical_url,
    i.title,
    i.author,
    i.published_at,
    i.first_seen_at,
    i.updated_at,
    i.summary,
    i.content,
    i.text,
    i.text_source,
    i.language,
    i.image_url
FROM items i
JOIN feeds f ON f.id = i.feed_id
"""

V_STORIES = """
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

SQLITE_FTS_TRIGGERS = (
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


def create_sqlite_fts_triggers() -> None:
    for statement in SQLITE_FTS_TRIGGERS:
        op.execute(statement)


def upgrade() -> None:
    op.execute(V_ITEMS)
    op.execute(V_STORIES)
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute(
            "CREATE VIRTUAL TABLE items_fts USING fts5("
            "title, text, content='items', content_rowid='id', "
            "tokenize='unicode61 remove_diacritics 2')"
        )
        create_sqlite_fts_triggers()
        op.execute("INSERT INTO items_fts(items_fts) VALUES ('rebuild')")
    elif dialect == "postgresql":
        op.execute(f"CREATE INDEX ix_items_search ON items USING GIN (({PG_SEARCH_VECTOR}))")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for name in ("items_fts_ai", "items_fts_ad", "items_fts_au"):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        op.execute("DROP TABLE IF EXISTS items_fts")
    elif dialect == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_items_search")
    op.execute("DROP VIEW IF EXISTS v_stories")
    op.execute("DROP VIEW IF EXISTS v_items")
