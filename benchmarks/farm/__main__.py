"""Command line: generate, serve, config (and the latency proxy that serve starts)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import threading
from pathlib import Path

from .config import write_config
from .generate import Farm, generate
from .serve import ROOT, run_proxy, serve


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.farm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="write a farm of feeds and article pages")
    g.add_argument("--feeds", type=int, default=2000)
    g.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "work" / "farm")
    g.add_argument("--seed", type=int, default=1)
    g.add_argument("--corpora", type=Path, default=ROOT.parent / "shared" / "corpora")
    g.add_argument("--port", type=int, default=18080, help="nginx port (the proxy: port + 1)")
    g.add_argument("--jobs", type=int, default=None, help="processes (default: all cores)")
    g.add_argument(
        "--hosts",
        type=int,
        default=1,
        help="spread the sites over N addresses 127.0.1.1 … 127.0.1.N (default 1: 127.0.0.1)",
    )

    s = sub.add_parser("serve", help="serve a farm until Ctrl-C; prints the base URLs")
    s.add_argument("farm", type=Path)
    s.add_argument("--latency", type=float, default=0.2, help="seconds added by the proxy")
    s.add_argument("--nginx-workers", type=int, default=1)
    s.add_argument("--access-log", action="store_true")

    c = sub.add_parser("config", help="write a feeds.yaml for the aggregator")
    c.add_argument("farm", type=Path)
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--limit", type=int, default=None, help="only the first N feeds")
    c.add_argument("--latency", action="store_true", help="point at the latency proxy")
    c.add_argument("--full-text", action="store_true")
    c.add_argument("--database", default=None)
    c.add_argument("--concurrency", type=int, default=32)

    p = sub.add_parser("proxy", help="(internal) the latency proxy")
    p.add_argument("--host", default="127.0.0.1", help="address(es), comma-separated")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--upstream-port", type=int, required=True)
    p.add_argument("--latency", type=float, default=0.2)

    args = parser.parse_args()
    if args.command == "generate":
        farm = generate(
            args.out,
            feeds=args.feeds,
            seed=args.seed,
            corpora=args.corpora,
            port=args.port,
            jobs=args.jobs,
            hosts=args.hosts,
        )
        st = farm.stats
        print(
            f"{args.out}: {st['feeds']:.0f} feeds on {st['hosts']:.0f} host(s), {st['entries']:.0f} entries/pages "
            f"({st['shared_entries']:.0f} copies of shared stories), "
            f"{(st['page_bytes'] + st['feed_bytes']) / 1e6:.0f} MB in {st['seconds']} s; "
            + ", ".join(f"{k[5:]} {v:.0f}" for k, v in st.items() if k.startswith("kind_"))
        )
    elif args.command == "serve":
        with serve(
            args.farm,
            latency=args.latency if args.latency > 0 else None,
            nginx_workers=args.nginx_workers,
            access_log=args.access_log,
        ) as served:
            print(f"nginx:         {served.base}  (e.g. {served.urls(limit=1)[0]})", flush=True)
            if served.latency_base:
                print(f"+{args.latency:g} s proxy: {served.latency_base}", flush=True)
            done = threading.Event()
            signal.signal(signal.SIGTERM, lambda *_: done.set())
            with contextlib.suppress(KeyboardInterrupt):
                done.wait()
    elif args.command == "config":
        farm = Farm.load(args.farm)
        path = write_config(
            farm,
            args.out,
            latency=args.latency,
            limit=args.limit,
            database_url=args.database,
            full_text=args.full_text,
            concurrency=args.concurrency,
        )
        print(path)
    elif args.command == "proxy":
        asyncio.run(run_proxy(args.host, args.port, args.upstream_port, args.latency))


if __name__ == "__main__":
    main()
