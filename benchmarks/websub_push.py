"""From a WebSub hub's publish to stored items: the time a hub waits for our answer.

    python benchmarks/websub_push.py [--pushes 50] [--database postgresql://…]

A feed on 127.0.0.1 declares the test hub (``tests/websubhub.py``); the daemon (in this
process, its HTTP face on 127.0.0.1, SQLite through the writer process as under
``aggregator run``, or PostgreSQL) subscribes; then the hub publishes ``--pushes``
documents of one new entry each (``full_text: false``) and times each delivery, from
its POST to our 202, which is sent once the items are committed. Prints the median,
p95 and max, and checks that every entry was stored and the feed was not polled again.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from aggregator.config import load_config  # noqa: E402
from aggregator.scheduler import Daemon  # noqa: E402
from aggregator.store import open_store  # noqa: E402
from httpserver import FixtureServer  # noqa: E402
from test_websub import atom, free_port, write  # noqa: E402
from websubhub import Hub  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pushes", type=int, default=50)
    parser.add_argument("--database", default=None)
    args = parser.parse_args()
    server = FixtureServer().start()
    hub = Hub()
    with tempfile.TemporaryDirectory() as tmp:
        topic = server.url("/feed.xml")
        server.add("/feed.xml", atom(topic, hub.url, [("e0", "Entry 0")]))
        port = free_port()
        db = args.database or f"sqlite:///{Path(tmp) / 'agg.db'}"
        cfg = Path(tmp) / "feeds.yaml"
        write(cfg, [{"url": topic, "name": "pushed"}], port, db)
        config = load_config(cfg)
        store = open_store(config.database_url)
        store.upgrade()
        store.start_writer_process()
        daemon = Daemon(config, store, config_path=cfg, database_override=None)
        times: list[float] = []

        async def drive() -> None:
            try:
                while not hub.confirmed("subscribe"):
                    await asyncio.sleep(0.05)
                polls = len(server.hits("/feed.xml"))
                for i in range(1, args.pushes + 1):
                    doc = atom(topic, hub.url, [(f"e{i}", f"Entry {i}")]).encode()
                    started = time.perf_counter()
                    answers = await asyncio.to_thread(hub.publish, topic, doc)
                    times.append(time.perf_counter() - started)
                    assert [a.status_code for a in answers] == [202]
                assert len(server.hits("/feed.xml")) == polls, "the feed was polled again"
            finally:
                daemon.stop_event.set()

        async def run() -> None:
            task = asyncio.create_task(drive())
            await daemon.run()
            await task

        try:
            asyncio.run(run())
            items = store.counts()["items"]
        finally:
            store.close()
    hub.stop()
    server.stop()
    assert items == args.pushes + 1, f"{items} items stored, {args.pushes + 1} expected"
    times.sort()
    p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
    print(
        f"{len(times)} pushes ({'PostgreSQL' if args.database else 'SQLite'}): "
        f"median {statistics.median(times) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, "
        f"max {times[-1] * 1000:.0f} ms (publish POST to 202 after the commit)"
    )


if __name__ == "__main__":
    main()
