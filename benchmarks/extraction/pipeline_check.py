"""Zyte final check through the whole pipeline: the benchmark's pages served on 127.0.0.1 as
the articles of a local feed, ingested by `aggregator run --once`, and the stored
`items.text` scored against the gold text beside trafilatura's defaults on the same bytes.

    python benchmarks/extraction/pipeline_check.py [--corpora ../shared/corpora]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from statistics import mean

import trafilatura
import yaml
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent))
import eval as ev  # the benchmark's loaders and metric


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corpora", type=Path, default=ev.ROOT.parent / "shared" / "corpora")
    args = parser.parse_args()
    pages = list(ev.zyte_pages(args.corpora))
    bodies = {p.page_id: ev.read_input(p) for p in pages}
    routes: dict[str, bytes] = {f"/a/{pid}.html": body for pid, body in bodies.items()}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = routes.get(self.path)
            if body is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            ctype = "application/rss+xml" if self.path.endswith(".xml") else "text/html"
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    items = "".join(
        f"<item><title>page {pid}</title><link>{base}/a/{pid}.html</link><guid>{pid}</guid>"
        f"<description>{escape('A teaser.')}</description></item>"
        for pid in bodies
    )
    routes["/feed.xml"] = (
        f'<?xml version="1.0"?><rss version="2.0"><channel><title>zyte</title>'
        f"<link>{base}/</link><description>d</description>{items}</channel></rss>"
    ).encode()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "feeds.yaml"
        cfg.write_text(
            yaml.safe_dump(
                {
                    "settings": {
                        "allow_private_networks": ["127.0.0.0/8"],
                        "per_host_delay": "0s",
                        "per_host_concurrency": 8,
                        "max_entries_per_feed": 1000,
                    },
                    "feeds": [{"url": f"{base}/feed.xml"}],
                }
            )
        )
        db = Path(tmp) / "z.db"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGGREGATOR_")}
        subprocess.run(
            [
                sys.executable,
                "-m",
                "aggregator",
                "run",
                "--once",
                "--config",
                str(cfg),
                "--database",
                f"sqlite:///{db}",
                "--log-level",
                "ERROR",
            ],
            env=env,
            check=True,
            capture_output=True,
        )
        engine = create_engine(f"sqlite:///{db}")
        with engine.connect() as conn:
            stored = {
                str(r.url): (r.text, r.text_source)
                for r in conn.execute(text("SELECT url, text, text_source FROM items"))
            }
        engine.dispose()
    server.shutdown()
    ours, default = [], []
    from_article = 0
    for page in pages:
        gold = ev.ngrams(page.gold)
        if not gold:
            continue
        url = f"{base}/a/{page.page_id}.html"
        pipeline_text, source = stored.get(url, (None, None))
        from_article += source == "article"
        ours.append(ev.prf(pipeline_text, gold))
        default.append(ev.prf(trafilatura.extract(bodies[page.page_id], url=url), gold))

    def row(name: str, scores: list[tuple[float, float, float]]) -> str:
        p, r, f = (mean(s[i] for s in scores) for i in range(3))
        return f"| {name} | {p:.4f} | {r:.4f} | {f:.4f} |"

    print(
        f"Zyte pages through `aggregator run --once`: {len(ours)} pages, "
        f"{from_article} items took the article text"
    )
    print("| config | P | R | F1 |\n| --- | --- | --- | --- |")
    print(row("trafilatura.extract defaults, same bytes", default))
    print(row("aggregator pipeline (items.text)", ours))
    delta = mean(s[2] for s in ours) - mean(s[2] for s in default)
    print(f"F1 difference: {delta:+.4f}")


if __name__ == "__main__":
    main()
