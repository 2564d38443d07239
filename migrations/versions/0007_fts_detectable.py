"""SQLite: the full-text table ``items_fts`` declared so that other tools find it.

Migration 0002 declared it ``content='items'``. datasette and sqlite-utils look for an
FTS table of ``items`` with ``content="items"`` or ``content=[items]`` in its SQL (or
one named after the table itself), so they did not see the index: datasette's
``?_search=`` silently returned every row. This revision drops the FTS table and its
triggers and creates them again with ``content="items"``, then rebuilds the index from
``items`` (the same columns, tokenizer and triggers: searches answer as before). It all
happens in the migration's transaction: a failure leaves the old table in place.

PostgreSQL has no FTS table (a GIN index, migration 0002): nothing to do.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TRIGGERS = ("items_fts_ai", "items_fts_ad", "items_fts_au")
TRIGGER_SQL = (
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
# The declaration datasette and sqlite-utils detect: content="items" (double quotes).
DETECTABLE = (
    "CREATE VIRTUAL TABLE items_fts USING fts5("
    "title, text, content=\"items\", content_rowid='id', "
    "tokenize='unicode61 remove_diacritics 2')"
)
# Migration 0002's declaration, for the downgrade.
PREVIOUS = (
    "CREATE VIRTUAL TABLE items_fts USING fts5("
    "title, text, content='items', content_rowid='id', "
    "tokenize='unicode61 remove_diacritics 2')"
)


def _recreate(declaration: str) -> None:
    for name in TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.execute("DROP TABLE IF EXISTS items_fts")  # its shadow tables only: items stays
    op.execute(declaration)
    for statement in TRIGGER_SQL:
        op.execute(statement)
    op.execute("INSERT INTO items_fts(items_fts) VALUES ('rebuild')")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _recreate(DETECTABLE)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _recreate(PREVIOUS)
