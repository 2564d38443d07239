"""Tables of events and webhook deliveries (migration 0012; no behaviour). The schema is
a public API: see docs/schema.md ("Events and webhooks") and docs/push.md."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from .tables import BigId, UTCDateTime, metadata

webhooks = Table(
    "webhooks",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("url", Text, nullable=False, unique=True),
    Column("events", JSON, nullable=False),
    Column("sources_reached", Integer, nullable=False, server_default="2"),
    Column("tags", JSON),
    Column("feeds", JSON),
    Column("created_at", UTCDateTime, nullable=False),
    Column("removed_at", UTCDateTime),
)

events = Table(
    "events",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("event_key", String(64), nullable=False, unique=True),  # the webhook-id
    Column("type", String(32), nullable=False),
    Column("version", Integer, nullable=False),  # of the event document's schema
    Column("created_at", UTCDateTime, nullable=False),
    Column("feed_id", BigId),
    Column("story_id", BigId),
    Column("item_id", BigId),
    Column("once_key", Text, unique=True),  # story.sources_reached: once per story and threshold
    Column("data", Text, nullable=False),  # the document's "data", JSON text
    Index("ix_events_created_at", "created_at"),
)

event_deliveries = Table(
    "event_deliveries",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("event_id", BigId, ForeignKey("events.id", ondelete="CASCADE"), nullable=False),
    Column("webhook_id", BigId, ForeignKey("webhooks.id", ondelete="CASCADE"), nullable=False),
    Column("state", String(16), nullable=False),  # pending, delivered, dead
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    # the start of its retry window (creation, or `events retry`): still failing
    # webhook_max_age later, it is dead
    Column("retry_since", UTCDateTime, nullable=False),
    Column("last_attempt_at", UTCDateTime),
    Column("last_status", Integer),
    Column("last_error", Text),
    Column("delivered_at", UTCDateTime),
    Column("lease_owner", Text),
    Column("lease_expires_at", UTCDateTime),
    UniqueConstraint("event_id", "webhook_id", name="uq_event_deliveries_event_webhook"),
    Index("ix_event_deliveries_due", "state", "next_attempt_at"),
    Index("ix_event_deliveries_webhook_id", "webhook_id"),
)
