"""Serve every real feed document of the shared corpora on 127.0.0.1 and ingest them all
with one `aggregator run --once` (feeds only: their article links point to the internet).

    python benchmarks/corpus_run.py [--corpora ../shared/corpora] [--workdir /tmp/corpus-run]

Prints the run's own summary table, then a breakdown of the failures by cause.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]
TYPES = {".json": "application/feed+json", ".html": "text/html", ".htm": "text/html"}


class Handler(SimpleHTTPRequestHandler):
    def guess_type(self, path: str | os.PathLike[str]) -> str:
        return TYPES.get(Path(path).suffix.lower(), "application/xml")

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corpora", type=Path, default=ROOT.parent / "shared" / "corpora")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/corpus-run"))
    parser.add_argument(
        "--wrap", default="", help="prefix command, e.g. 'py-spy record -o p.svg --subprocesses --'"
    )
    args = parser.parse_args()
    feeds_dir = args.corpora / "feeds"
    with (feeds_dir / "manifest.tsv").open() as fh:
        paths = [row["path"] for row in csv.DictReader(fh, delimiter="\t")]
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(feeds_dir)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    args.workdir.mkdir(parents=True, exist_ok=True)
    db = args.workdir / "corpus.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    config = {
        "settings": {
            "allow_private_networks": ["127.0.0.0/8"],
            "full_text": False,
            "per_host_concurrency": 16,
            "per_host_delay": "0s",
            "concurrency": 32,
        },
        "feeds": [{"url": f"{base}/{p}", "name": p} for p in paths],
    }
    cfg = args.workdir / "feeds.yaml"
    cfg.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGGREGATOR_")}
    env["COLUMNS"] = "160"
    started = time.monotonic()
    result = subprocess.run(
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
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.monotonic() - started
    server.shutdown()
    print(result.stdout.split("failed feeds")[0])
    if args.wrap:
        print(result.stderr[-2000:])
    print(
        f"exit code {result.returncode}; wall time {elapsed:.1f} s for {len(paths)} feed documents"
    )
    engine = create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        errors = (
            conn.execute(text("SELECT last_error FROM feeds WHERE error_count > 0")).scalars().all()
        )
        problems = conn.execute(
            text("SELECT count(*) FROM feeds WHERE error_count = 0 AND last_error IS NOT NULL")
        ).scalar()
        items = conn.execute(text("SELECT count(*) FROM items")).scalar()
    engine.dispose()
    causes: dict[str, int] = {}
    for error in errors:
        cause = str(error).split(":")[0].split(";")[0][:70]
        causes[cause] = causes.get(cause, 0) + 1
    print(f"items stored: {items}; feeds ingested with a recorded problem (bozo): {problems}")
    print("failures by cause:")
    for cause, n in sorted(causes.items(), key=lambda kv: -kv[1]):
        print(f"  {n:4d}  {cause}")


if __name__ == "__main__":
    main()
