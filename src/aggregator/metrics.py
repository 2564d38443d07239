"""Process-wide counters for ``GET /metrics`` (Prometheus text format).

One ``Metrics`` object per process holds its own registry (tests make as many as they
like). The daemon feeds it from the poll outcomes, the fetches and the scheduled
exports; the server adds gauges read from the database at scrape time. Every metric and
every value of its labels is listed in docs/operations.md ("Metrics"), and
tests/test_metrics_docs.py compares that list with a real scrape: a new label value
goes into both.
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily

from .records import FetchResult, PollOutcome, PruneCounts

# no "*_created" series: they double the output for no use here
disable_created_metrics()  # type: ignore[no-untyped-call]
DELIVERY_RESULTS = ("delivered", "failed", "dead")
RETENTION_KINDS = ("items", "stories", "texts", "tombstones")
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.polls = Counter(
            "aggregator_polls",
            "Feed polls by outcome (ok, not_modified, failed).",
            ["outcome"],
            registry=r,
        )
        self.items_created = Counter(
            "aggregator_items_created", "Items stored for the first time.", registry=r
        )
        self.items_updated = Counter(
            "aggregator_items_updated", "Stored items whose entry changed.", registry=r
        )
        self.stories_created = Counter(
            "aggregator_stories_created", "New stories (items that matched none).", registry=r
        )
        self.items_merged = Counter(
            "aggregator_items_merged", "Items merged into an existing story.", registry=r
        )
        self.entries_cut = Counter(
            "aggregator_entries_cut",
            "Entries of fetched documents past max_entries_per_feed, not stored.",
            registry=r,
        )
        self.entries_blocked = Counter(
            "aggregator_entries_blocked",
            "Entries dropped by the feeds' filters when first evaluated (never stored).",
            registry=r,
        )
        self.fetch_seconds = Histogram(
            "aggregator_fetch_duration_seconds",
            "HTTP fetch latency (feeds and article pages).",
            ["kind"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.bytes_downloaded = Counter(
            "aggregator_downloaded_bytes",
            "Response body bytes downloaded (after decompression).",
            ["kind"],
            registry=r,
        )
        self.bytes_saved = Counter(
            "aggregator_not_modified_saved_bytes",
            "Bytes not downloaded thanks to 304 Not Modified (size of the feed's last full "
            "response).",
            registry=r,
        )
        self.exports = Counter(
            "aggregator_export_runs",
            "Scheduled export runs by export name and outcome (ok, failed).",
            ["export", "outcome"],
            registry=r,
        )
        self.webhook_deliveries = Counter(
            "aggregator_webhook_deliveries",
            "Webhook delivery attempts by result (delivered; failed: retried later; dead: "
            "given up).",
            ["result"],
            registry=r,
        )
        self._last_size: dict[str, int] = {}
        self._lock = threading.Lock()
        for outcome in ("ok", "not_modified", "failed"):
            self.polls.labels(outcome=outcome)
        for kind in ("feed", "page"):
            self.fetch_seconds.labels(kind=kind)
            self.bytes_downloaded.labels(kind=kind)
        for result in DELIVERY_RESULTS:
            self.webhook_deliveries.labels(result=result)

        self.retention_rows = Counter(
            "aggregator_retention_rows_deleted",
            "Rows retention removed: items and stories deleted, item texts dropped, "
            "tombstones forgotten.",
            ["kind"],
            registry=r,
        )
        for kind in RETENTION_KINDS:
            self.retention_rows.labels(kind)
        self.retention_bytes = Counter(
            "aggregator_retention_bytes_deleted",
            "Bytes of item data retention deleted or cleared (text columns and shingles).",
            registry=r,
        )

    def observe_poll(self, outcome: PollOutcome) -> None:
        if not outcome.ok:
            label = "failed"
        elif outcome.not_modified:
            label = "not_modified"
        else:
            label = "ok"
        self.polls.labels(outcome=label).inc()
        self.items_created.inc(outcome.new_items)
        self.items_updated.inc(outcome.updated_items)
        self.stories_created.inc(outcome.new_stories)
        self.items_merged.inc(outcome.merged_items)
        self.entries_cut.inc(outcome.entries_cut)
        self.entries_blocked.inc(outcome.blocked_new)

    def observe_prune(self, counts: PruneCounts) -> None:
        """What one committed retention transaction removed."""
        for kind, n in zip(
            RETENTION_KINDS,
            (counts.items, counts.stories, counts.texts, counts.tombstones_pruned),
            strict=True,
        ):
            if n:
                self.retention_rows.labels(kind).inc(n)
        if counts.bytes:
            self.retention_bytes.inc(counts.bytes)

    def observe_fetch(self, result: FetchResult, *, page: bool) -> None:
        kind = "page" if page else "feed"
        self.fetch_seconds.labels(kind=kind).observe(result.elapsed)
        self.bytes_downloaded.labels(kind=kind).inc(len(result.body))
        if page:
            return
        with self._lock:
            if result.status == 304:
                saved = self._last_size.get(result.url)
                if saved:
                    self.bytes_saved.inc(saved)
            elif result.status == 200:
                self._last_size[result.url] = len(result.body)

    def observe_export(self, name: str, ok: bool) -> None:
        self.exports.labels(export=name, outcome="ok" if ok else "failed").inc()

    def observe_delivery(self, result: str) -> None:
        """A webhook delivery attempt's result (``webhooks.Sender``)."""
        if result in DELIVERY_RESULTS:
            self.webhook_deliveries.labels(result=result).inc()


def blocked_gauge(counts: dict[str, int]) -> GaugeMetricFamily:
    """``aggregator_feed_entries_blocked{feed}``: the entries of each feed's current
    document that its filters drop (remembered in the database), by feed name or URL."""
    gauge = GaugeMetricFamily(
        "aggregator_feed_entries_blocked",
        "Entries of each feed's document its filters drop (feeds with none left out).",
        labels=["feed"],
    )
    for feed, count in sorted(counts.items()):
        gauge.add_metric([feed], count)
    return gauge
