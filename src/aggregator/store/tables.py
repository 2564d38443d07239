"""Table definitions (no behaviour). The schema is a public API: see docs/schema.md.

Changed only through Alembic migrations in ``migrations/``; these definitions mirror
the migrated schema so queries can be written with SQLAlchemy Core.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

metadata = MetaData()

# BIGINT primary keys on PostgreSQL, INTEGER (rowid alias) on SQLite.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        result: datetime = value
        if result.tzinfo is None:
            return result.replace(tzinfo=UTC)
        return result.astimezone(UTC)


feeds = Table(
    "feeds",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("url", Text, nullable=False, unique=True),
    Column("configured_url", Text, nullable=True),
    Column("name", Text),
    Column("type", String(16), nullable=False, server_default="feed"),
    Column("tags", JSON, nullable=True),
    Column("enabled", Boolean, nullable=False, server_default="1"),
    Column("full_text", Boolean, nullable=False, server_default="1"),
    Column("interval_seconds", Float),
    Column("adaptive_interval_seconds", Float),
    Column("title", Text),
    Column("etag", Text),
    Column("last_modified", Text),
    Column("last_polled_at", UTCDateTime),
    Column("last_success_at", UTCDateTime),
    Column("last_status", Integer),
    Column("last_error", Text),
    Column("error_count", Integer, nullable=False, server_default="0"),
    Column("next_check_at", UTCDateTime),
    Column("hold_until", UTCDateTime),
    Column("disabled_reason", Text),
    Column("redirect_url", Text),
    Column("redirect_count", Integer, nullable=False, server_default="0"),
    Column("redirect_seen_at", UTCDateTime),
    Column("not_found_since", UTCDateTime),
    Column("host", Text),
    Column("lease_owner", Text),
    Column("lease_expires_at", UTCDateTime),
    Column("removed_at", UTCDateTime),
    Column("created_at", UTCDateTime, nullable=False),
    Column("push_until", UTCDateTime),  # lease end of a live WebSub subscription (0013)
    Index("ix_feeds_next_check_at", "next_check_at"),
    # ix_feeds_due (next_check_at NULLS FIRST, id): migration 0005, dialect-specific
    Index("ix_feeds_host", "host"),
)

stories = Table(
    "stories",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("title", Text),
    Column("url", Text),
    Column("canonical_url", Text),
    Column("first_seen_at", UTCDateTime, nullable=False),
    Column("last_seen_at", UTCDateTime, nullable=False),
    Column("item_count", Integer, nullable=False, server_default="0"),
    Column("representative_item_id", BigId),  # the earliest full version (0003)
    Index("ix_stories_first_seen_at", "first_seen_at"),
    Index("ix_stories_canonical_url", "canonical_url"),
)

items = Table(
    "items",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("feed_id", BigId, ForeignKey("feeds.id", ondelete="CASCADE"), nullable=False),
    Column("entry_key", Text, nullable=False),
    Column("guid", Text),
    Column("url", Text),
    Column("canonical_url", Text),
    Column("title", Text),
    Column("author", Text),
    Column("published_at", UTCDateTime),
    Column("summary", Text),
    Column("content", Text),
    Column("text", Text),
    Column("text_source", String(16)),
    Column("language", String(32)),
    Column("image_url", Text),
    Column("content_hash", String(64), nullable=False),
    Column("story_id", BigId, ForeignKey("stories.id", ondelete="SET NULL")),
    Column("dedup_reason", String(32)),
    Column("dedup_score", Float),
    Column("first_seen_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("page_canonical_url", Text),  # the page's rel=canonical / og:url (0003)
    Column("shingles", LargeBinary),  # the text's shingle hashes, int64 little-endian (0004, 0006)
    Column("dedup_item_id", BigId),  # the item a merge decision matched (0003)
    Column("dedup_url_refusal", Text),  # why its URL was not taken as its identity (0009)
    UniqueConstraint("feed_id", "entry_key", name="uq_items_feed_entry"),
    Index("ix_items_canonical_url", "canonical_url"),
    Index("ix_items_story_id", "story_id"),
    Index("ix_items_first_seen_at", "first_seen_at"),
    Index("ix_items_page_canonical_url", "page_canonical_url"),
    Index("ix_items_feed_first_seen", "feed_id", "first_seen_at"),  # retention (0016)
)

# ---- story deduplication (0003) -------------------------------------------------------

dedup_bands = Table(
    "dedup_bands",
    metadata,
    Column("band", BigInteger, primary_key=True),
    Column("first_seen_at", UTCDateTime, primary_key=True),
    Column("item_id", BigId, ForeignKey("items.id", ondelete="CASCADE"), primary_key=True),
    Index("ix_dedup_bands_item_id", "item_id"),
    sqlite_with_rowid=False,
)

dedup_shingles = Table(
    "dedup_shingles",
    metadata,
    Column("site", BigInteger, primary_key=True),
    Column("shingle", BigInteger, primary_key=True),
    Column("df", Integer, nullable=False),
    Column("last_seen_at", UTCDateTime, nullable=False),
    sqlite_with_rowid=False,
)

story_merges = Table(
    "story_merges",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("story_id", BigId, ForeignKey("stories.id", ondelete="CASCADE"), nullable=False),
    Column("merged_story_id", BigId, nullable=False),
    Column("item_id", BigId, ForeignKey("items.id", ondelete="SET NULL")),
    Column("score", Float),
    Column("reason", String(32)),
    Column("merged_at", UTCDateTime, nullable=False),
    Column("merged_title", Text),
    Column("merged_url", Text),
    Column("merged_first_seen_at", UTCDateTime),
    Column("merged_item_count", Integer),
    Index("ix_story_merges_story_id", "story_id"),
    Index("ix_story_merges_merged_story_id", "merged_story_id"),
)

# ---- entry filters (0010) -----------------------------------------------------------------

blocked_entries = Table(
    "blocked_entries",
    metadata,
    Column("feed_id", BigId, ForeignKey("feeds.id", ondelete="CASCADE"), primary_key=True),
    Column("entry_key", Text, primary_key=True),
    Column("rules_hash", String(64), nullable=False),  # filters.fingerprint of the rules
    Column("rule", Text, nullable=False),  # the rule that blocked it ("no keep rule matched")
    Column("title", Text),
    Column("url", Text),
    Column("blocked_at", UTCDateTime, nullable=False),
)


# ---- retention (0016) ---------------------------------------------------------------------

# the entry keys of each feed's current document (the last one a poll read): retention
# never deletes an item whose entry is in it
feed_documents = Table(
    "feed_documents",
    metadata,
    Column("feed_id", BigId, ForeignKey("feeds.id", ondelete="CASCADE"), primary_key=True),
    Column("entry_keys", Text, nullable=False),  # a JSON array of the keys, in document order
    Column("updated_at", UTCDateTime, nullable=False),
)

# the entries whose items retention deleted while their feed still served them: known,
# so they are not stored again as new; dropped once the entry has left the document
item_tombstones = Table(
    "item_tombstones",
    metadata,
    Column("feed_id", BigId, ForeignKey("feeds.id", ondelete="CASCADE"), primary_key=True),
    Column("entry_key", Text, primary_key=True),
    Column("deleted_at", UTCDateTime, nullable=False),
    sqlite_with_rowid=False,
)


# ---- WebSub subscriptions (0013) --------------------------------------------------------

websub_subscriptions = Table(
    "websub_subscriptions",
    metadata,
    Column("id", BigId, primary_key=True),
    Column(
        "feed_id",
        BigId,
        ForeignKey("feeds.id", ondelete="CASCADE"),
        nullable=False,
        unique=True,
    ),
    Column("hub", Text, nullable=False),
    Column("topic", Text, nullable=False),
    Column("callback_id", String(64), nullable=False, unique=True),
    Column("secret", String(128), nullable=False),
    Column("state", String(16), nullable=False),
    Column("request_mode", String(16)),
    Column("requested_at", UTCDateTime),
    Column("lease_seconds", Integer),
    Column("lease_expires_at", UTCDateTime),
    Column("next_attempt_at", UTCDateTime),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("last_error", Text),
    Column("last_push_at", UTCDateTime),
    Column("claim_owner", Text),
    Column("claim_expires_at", UTCDateTime),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_websub_subscriptions_next_attempt_at", "next_attempt_at"),
)
