"""docs/operations.md lists every metric of ``/metrics`` and every value of its labels:
compared with what a real scrape emits (a label value the code emits but the docs leave
out, such as ``state="dormant"`` once, fails here)."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from aggregator.config import Config, Settings
from aggregator.metrics import Metrics
from aggregator.server import bind, create_app
from aggregator.store import open_store

DOCS = Path(__file__).resolve().parent.parent / "docs" / "operations.md"
FREE = None  # a label whose values are names from the config (export names)


@contextmanager
def running(app: Any) -> Iterator[str]:
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        for _ in range(1000):
            if server.started:
                break
            thread.join(0.01)
        assert server.started
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def documented() -> dict[str, dict[str, set[str] | None]]:
    """{metric: {label: its values, or FREE}} from the metrics table of operations.md."""
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("## Metrics (`/metrics`)", 1)[1].split("\n## ", 1)[0]
    metrics: dict[str, dict[str, set[str] | None]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 4 or not cells[0].startswith("`aggregator_"):
            continue
        labels: dict[str, set[str] | None] = {}
        for spec in filter(None, (part.strip() for part in cells[2].split(";"))):
            name, _, values = spec.partition(":")
            label = re.match(r"`(\w+)`", name)
            assert label, spec
            found = set(re.findall(r"`([^`]+)`", values))
            labels[label.group(1)] = found or FREE
        metrics[cells[0].strip("`")] = labels
    return metrics


def emitted(tmp_path: Path) -> dict[str, dict[str, set[str]]]:
    """{metric: {label: values}} of a scrape of a real server, every labelled series made
    to appear: a scheduled export that ran once well and once not."""
    url = f"sqlite:///{tmp_path / 'm.db'}"
    store = open_store(url)
    try:
        store.upgrade()
        metrics = Metrics()
        metrics.observe_export("daily", ok=True)
        metrics.observe_export("daily", ok=False)
        config = Config(path=None, settings=Settings(database_url=url), feeds=())
        with running(create_app(store, lambda: config, metrics=metrics)) as base:
            body = httpx.get(base + "/metrics", timeout=30).text
    finally:
        store.close()
    found: dict[str, dict[str, set[str]]] = {}
    for family in text_string_to_metric_families(body):
        name = family.name + ("_total" if family.type == "counter" else "")
        labels = found.setdefault(name, {})
        for sample in family.samples:
            for label, value in sample.labels.items():
                labels.setdefault(label, set()).add(value)
    return found


def test_every_metric_and_label_value_is_documented(tmp_path: Path) -> None:
    docs = documented()
    scrape = emitted(tmp_path)
    # the last success gauge appears once a feed was polled, the blocked entries gauge once
    # a feed's filters dropped an entry: documented, not emitted here
    assert set(docs) - set(scrape) == {
        "aggregator_last_success_timestamp_seconds",
        "aggregator_feed_entries_blocked",
    }
    assert set(scrape) <= set(docs), set(scrape) - set(docs)
    for metric, labels in scrape.items():
        assert set(labels) == set(docs[metric]), (metric, labels, docs[metric])
        for label, values in labels.items():
            expected = docs[metric][label]
            if expected is FREE:
                assert values == {"daily"}, (metric, label)  # the export's name
            else:
                assert values == expected, (metric, label, values ^ expected)
    assert scrape["aggregator_feeds"]["state"] >= {"dormant"}
