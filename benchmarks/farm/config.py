"""feeds.yaml for the aggregator pointing at a farm."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .generate import Farm

DEFAULT_SETTINGS: dict[str, Any] = {
    # every farm feed is on 127.0.0.1: allow it, and lift the per-host politeness limits
    "allow_private_networks": ["127.0.0.0/8"],
    "concurrency": 32,
    "per_host_concurrency": 32,
    "per_host_delay": "0s",
    "full_text": False,
}


def write_config(
    farm: Farm,
    path: Path,
    *,
    latency: bool = False,
    limit: int | None = None,
    database_url: str | None = None,
    **settings: Any,
) -> Path:
    """Write a feeds.yaml listing the farm's first ``limit`` feeds (all by default).

    ``settings`` override :data:`DEFAULT_SETTINGS` (e.g. ``full_text=True``, ``workers=1``);
    ``per_host_concurrency`` follows ``concurrency`` unless given.
    """
    values = dict(DEFAULT_SETTINGS)
    if "concurrency" in settings and "per_host_concurrency" not in settings:
        settings["per_host_concurrency"] = settings["concurrency"]
    values.update(settings)
    if database_url:
        values["database_url"] = database_url
    feeds = [
        {"url": url, "name": info.path.strip("/").split("/")[0]}
        for url, info in zip(farm.urls(latency=latency, limit=limit), farm.feeds, strict=False)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"settings": values, "feeds": feeds}, sort_keys=False))
    return path
