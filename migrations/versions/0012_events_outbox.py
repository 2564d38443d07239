"""Events and webhooks (issue 20): the outbox of events and their deliveries.

- ``webhooks``: the ``webhooks:`` subscriptions of ``feeds.yaml``, synced at start and on
  every reload (secrets are never stored; a subscription that left the config keeps its
  row with ``removed_at`` set, and its deliveries wait).
- ``events``: one row per event (``story.new``, ``story.sources_reached``, ``item.new``,
  ``feed.*``), written in the transaction that made it happen; ``event_key`` is the
  idempotency key sent as ``webhook-id``; ``once_key`` makes ``story.sources_reached``
  fire once per story and threshold.
- ``event_deliveries``: one row per event and subscription that wants it, with its
  state (pending, delivered, dead), attempts, next attempt and lease.

New tables only. See docs/schema.md and docs/push.md.

Revision ID: 0012
Revises: 0010
Create Date: 2026-12-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0010"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "webhooks",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("url", sa.Text(), nullable=False, unique=True),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("sources_reached", sa.Integer(), nullable=False, server_default="2"),
        sa.Column("tags", sa.JSON(), nullable=True),
        sa.Column("feeds", sa.JSON(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("removed_at", TS, nullable=True),
    )
    op.create_table(
        "events",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("event_key", sa.String(64), nullable=False, unique=True),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("feed_id", BigId, nullable=True),
        sa.Column("story_id", BigId, nullable=True),
        sa.Column("item_id", BigId, nullable=True),
        sa.Column("once_key", sa.Text(), nullable=True, unique=True),
        sa.Column("data", sa.Text(), nullable=False),
    )
    op.create_index("ix_events_created_at", "events", ["created_at"])
    op.create_table(
        "event_deliveries",
        sa.Column("id", BigId, primary_key=True),
        sa.Column(
            "event_id",
            BigId,
            sa.ForeignKey("events.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "webhook_id",
            BigId,
            sa.ForeignKey("webhooks.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_attempt_at", TS, nullable=False),
        sa.Column("retry_since", TS, nullable=False),
        sa.Column("last_attempt_at", TS, nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("delivered_at", TS, nullable=True),
        sa.Column("lease_owner", sa.Text(), nullable=True),
        sa.Column("lease_expires_at", TS, nullable=True),
        sa.UniqueConstraint("event_id", "webhook_id", name="uq_event_deliveries_event_webhook"),
    )
    op.create_index("ix_event_deliveries_due", "event_deliveries", ["state", "next_attempt_at"])
    op.create_index("ix_event_deliveries_webhook_id", "event_deliveries", ["webhook_id"])


def downgrade() -> None:
    op.drop_table("event_deliveries")
    op.drop_table("events")
    op.drop_table("webhooks")
