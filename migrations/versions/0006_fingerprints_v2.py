"""Story-dedup fingerprints, second version: shingles hashed with a vectorized polynomial
hash instead of blake2b per shingle (same sizes and meaning, different values), so every
stored fingerprint is recomputed from the item's stored text: ``items.shingles`` (now
little-endian int64 on every machine), the LSH band rows, and the per-site anchor counts.
The anchor counts lose their ``last_seen_at`` index: it was rewritten on every new story
and only a rare prune reads it (that scans the table instead).

This revision imports the application's current ``aggregator.dedup``: it recomputes
fingerprints the way the code that runs after it computes them.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

CHUNK = 1000


def upgrade() -> None:
    from aggregator import dedup
    from aggregator.dedup import site_key

    op.drop_index("ix_dedup_shingles_last_seen_at", table_name="dedup_shingles")
    bind = op.get_bind()
    has_rows = bind.execute(sa.text("SELECT 1 FROM items LIMIT 1")).first() is not None
    if not has_rows:
        return
    bind.execute(sa.text("DELETE FROM dedup_bands"))
    bind.execute(sa.text("DELETE FROM dedup_shingles"))
    anchors: Counter[tuple[int, int]] = Counter()
    last_seen: dict[tuple[int, int], Any] = {}
    last_id = 0
    select = sa.text(
        "SELECT items.id, items.text, items.url, items.first_seen_at, items.dedup_reason,"
        " feeds.url AS feed_url FROM items JOIN feeds ON feeds.id = items.feed_id"
        " WHERE items.id > :last ORDER BY items.id LIMIT :n"
    ).columns(first_seen_at=sa.DateTime())
    while True:
        rows = bind.execute(select, {"last": last_id, "n": CHUNK}).all()
        if not rows:
            break
        last_id = rows[-1].id
        shingles: list[dict[str, Any]] = []
        bands: list[dict[str, Any]] = []
        for row in rows:
            fp = dedup.fingerprint(row.text)
            shingles.append({"b_id": row.id, "b_shingles": fp.shingles if fp else None})
            if fp is None:
                continue
            bands.extend(
                {"band": b, "first_seen_at": row.first_seen_at, "item_id": row.id}
                for b in sorted(set(fp.bands))
            )
            site = site_key(row.url or row.feed_url)
            if row.dedup_reason == "new" and site is not None:  # it started its story
                for anchor in fp.anchors:
                    anchors[(site, anchor)] += 1
                    last_seen[(site, anchor)] = row.first_seen_at
        bind.execute(
            sa.text("UPDATE items SET shingles = :b_shingles WHERE id = :b_id").bindparams(
                sa.bindparam("b_shingles", type_=sa.LargeBinary())
            ),
            shingles,
        )
        if bands:
            bind.execute(
                sa.text(
                    "INSERT INTO dedup_bands (band, first_seen_at, item_id)"
                    " VALUES (:band, :first_seen_at, :item_id)"
                ).bindparams(sa.bindparam("first_seen_at", type_=sa.DateTime())),
                bands,
            )
    counts = [
        {"site": s, "shingle": a, "df": n, "last_seen_at": last_seen[(s, a)]}
        for (s, a), n in sorted(anchors.items())
    ]
    for start in range(0, len(counts), 10 * CHUNK):
        bind.execute(
            sa.text(
                "INSERT INTO dedup_shingles (site, shingle, df, last_seen_at)"
                " VALUES (:site, :shingle, :df, :last_seen_at)"
            ).bindparams(sa.bindparam("last_seen_at", type_=sa.DateTime())),
            counts[start : start + 10 * CHUNK],
        )


def downgrade() -> None:
    # the fingerprints stay in the new form (the old code would find no candidates among
    # them until they age out of the dedup window); only the index comes back
    op.create_index("ix_dedup_shingles_last_seen_at", "dedup_shingles", ["last_seen_at"])
