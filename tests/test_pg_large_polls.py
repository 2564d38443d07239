"""PostgreSQL: a poll of many new entries is saved. Its dedup locks were advisory locks,
one per band key (20 per entry), site and URL; a few feeds of a few hundred new entries at
once filled PostgreSQL's shared lock table and failed with "out of shared memory", every
time (found by the new-user pass on 41 real feeds). They are row locks now (migration
0015), whose number PostgreSQL does not bound."""

from __future__ import annotations

from pathlib import Path

import pytest

from builders import paragraph, rss
from conftest import write_config
from httpserver import FixtureServer
from ingest import rows, run_once

pytestmark = pytest.mark.postgres

ENTRIES = 400  # 8 000 band keys: more than the 6 400 lock slots of a default server


def test_feeds_of_hundreds_of_new_entries_are_saved_at_once(
    server: FixtureServer, tmp_path: Path, pg_url: str
) -> None:
    feeds = []
    for f in range(3):
        items = [
            {
                "title": f"Feed {f} post {i}",
                "link": f"http://127.0.0.1:1/{f}/{i}",
                "guid": f"{f}-{i}",
                "description": paragraph(f"{f}-{i}", 80),
            }
            for i in range(ENTRIES)
        ]
        feeds.append({"url": server.add(f"/big-{f}.xml", rss(f"Big {f}", items))})
    cfg = write_config(tmp_path / "feeds.yaml", feeds, full_text=False)
    summary = run_once(cfg, pg_url)
    assert summary.failed == 0, summary
    assert rows(pg_url, "SELECT count(*) FROM feeds WHERE last_error IS NOT NULL") == [(0,)]
    assert rows(pg_url, "SELECT count(*), count(DISTINCT story_id) FROM items") == [
        (3 * ENTRIES, 3 * ENTRIES)
    ]
