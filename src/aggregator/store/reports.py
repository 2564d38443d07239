"""Counts and story reports (``ReportsMixin`` of ``Store``): what the command line and
the HTTP face show about the store as a whole."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select

from . import stories as story_queries
from .database import Database
from .stories import StoryExplanation, StoryRow
from .tables import feeds, items, stories


class ReportsMixin(Database):
    def counts(self) -> dict[str, int]:
        with self.read() as conn:
            return {
                "feeds": int(conn.execute(select(func.count()).select_from(feeds)).scalar_one()),
                "items": int(conn.execute(select(func.count()).select_from(items)).scalar_one()),
                "stories": int(
                    conn.execute(select(func.count()).select_from(stories)).scalar_one()
                ),
            }

    def count_stories_since(self, since: datetime) -> int:
        with self.read() as conn:
            return int(
                conn.execute(
                    select(func.count())
                    .select_from(stories)
                    .where(stories.c.first_seen_at >= since)
                ).scalar_one()
            )

    def list_stories(
        self, since: datetime, *, min_sources: int = 1, limit: int = 200
    ) -> list[StoryRow]:
        """Stories first seen since ``since`` with at least ``min_sources`` feeds."""
        with self.read() as conn:
            return story_queries.list_stories(conn, since, min_sources, limit)

    def explain_story(self, story_id: int) -> StoryExplanation | None:
        """A story with each item's decision and the merges it went through; a story
        that was merged away is followed to the story it is part of now."""
        with self.read() as conn:
            return story_queries.explain_story(conn, story_id)
