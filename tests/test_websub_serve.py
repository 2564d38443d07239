"""A cron set-up with WebSub, as real processes: `aggregator run --once` polls the feed,
finds its hub and sends the subscription request; `aggregator serve` answers the hub's
verification and stores what the hub pushes (its own small pipeline); SIGTERM stops it
cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import write_config
from httpserver import FixtureServer
from ingest import aggregator, rows
from test_websub import atom, free_port
from websubhub import Hub

pytestmark = pytest.mark.slow


def test_run_once_subscribes_and_serve_receives(server: FixtureServer, tmp_path: Path) -> None:
    hub = Hub()
    topic = server.url("/feed.xml")
    server.add("/feed.xml", atom(topic, hub.url, [("a1", "First post")]))
    port = free_port()
    db = f"sqlite:///{tmp_path / 'agg.db'}"
    cfg = write_config(
        tmp_path / "feeds.yaml",
        [{"url": topic, "name": "pushed"}],
        full_text=False,
        database_url=db,
        websub={"callback_url": f"http://127.0.0.1:{port}/websub"},
    )
    # serve starts on an empty database: run --once migrates it before it subscribes
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGGREGATOR_")}
    serve = subprocess.Popen(
        [sys.executable, "-m", "aggregator", "serve", "--config", str(cfg), "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "serve did not start"
                assert serve.poll() is None, "serve exited"
                time.sleep(0.1)
        done = aggregator("run", "--once", "--config", str(cfg))
        assert done.returncode == 0, done.stderr
        hub.wait(lambda h: bool(h.confirmed("subscribe")))
        assert rows(db, "SELECT state FROM websub_subscriptions") == [("live",)]
        polls = len(server.hits("/feed.xml"))
        doc = atom(topic, hub.url, [("a2", "Pushed post")]).encode()
        assert [a.status_code for a in hub.publish(topic, doc)] == [202]
        titles = {str(r[0]) for r in rows(db, "SELECT title FROM items")}
        assert titles == {"First post", "Pushed post"}
        assert len(server.hits("/feed.xml")) == polls
        serve.send_signal(signal.SIGTERM)
        _, err = serve.communicate(timeout=30)
        # uvicorn re-raises the SIGTERM it handled, once it has shut down (and the
        # pipeline of `serve` is closed before that)
        assert serve.returncode in (0, -signal.SIGTERM), err
        assert "Traceback" not in err and "leaked" not in err, err
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()
        hub.stop()
