"""httpx's own connection pool vs aiohttp's client, through our Fetcher (address
guard and limits included): CPU per request for GETs to nginx on 127.0.0.1.

    python benchmarks/fetch_transport.py [--corpora ../shared/corpora] [--rounds 4]

Serves the corpus feed documents with nginx (Debian package, started here on a free port).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from aggregator.fetch import Fetcher, FetchLimits

ROOT = Path(__file__).resolve().parents[1]


async def run(urls: list[str], transport: str, concurrency: int) -> tuple[float, float, int]:
    limits = FetchLimits(
        user_agent="bench",
        allow_private_networks=("127.0.0.0/8",),
        concurrency=concurrency,
        per_host_concurrency=concurrency,
        per_host_delay=0,
        transport=transport,
    )
    async with Fetcher(limits) as fetcher:
        wall, cpu = time.perf_counter(), time.process_time()
        results = await asyncio.gather(*(fetcher.fetch(u) for u in urls), return_exceptions=True)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return wall, cpu, sum(1 for r in results if not isinstance(r, BaseException))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corpora", type=Path, default=ROOT.parent / "shared" / "corpora")
    parser.add_argument("--rounds", type=int, default=4, help="times each document is fetched")
    args = parser.parse_args()
    feeds = args.corpora / "feeds"
    with (feeds / "manifest.tsv").open() as fh:
        paths = [row["path"] for row in csv.DictReader(fh, delimiter="\t")]
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    work = Path(tempfile.mkdtemp(prefix="fetchbench-"))
    (work / "nginx.conf").write_text(
        f"worker_processes 1; daemon off; pid {work}/nginx.pid; error_log {work}/error.log;\n"
        "events { worker_connections 4096; }\n"
        "http { access_log off; default_type application/xml; keepalive_requests 1000000;\n"
        f"  client_body_temp_path {work}; proxy_temp_path {work}; fastcgi_temp_path {work};\n"
        f"  uwsgi_temp_path {work}; scgi_temp_path {work};\n"
        f"  server {{ listen 127.0.0.1:{port}; root {feeds}; }} }}\n"
    )
    server = subprocess.Popen([nginx, "-c", str(work / "nginx.conf"), "-e", str(work / "err")])
    try:
        time.sleep(0.5)
        urls = [f"http://127.0.0.1:{port}/{p}" for p in paths] * args.rounds
        print(f"{len(urls)} GETs of {len(paths)} corpus documents")
        print("| transport | concurrency | wall s | CPU s | CPU ms per request | ok |")
        print("| --- | --- | --- | --- | --- | --- |")
        for transport in ("httpx", "aiohttp"):
            for concurrency in (16, 64):
                wall, cpu, ok = asyncio.run(run(urls, transport, concurrency))
                print(
                    f"| {transport} | {concurrency} | {wall:.2f} | {cpu:.2f} | "
                    f"{cpu / len(urls) * 1000:.2f} | {ok} |"
                )
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
