"""`aggregator serve`: the read-only HTTP face (exports, stories, items, health, metrics)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated

import typer

from ..errors import AggregatorError
from ..logs import setup_logging
from .common import ConfigOpt, DatabaseOpt, LogLevelOpt, app, err, fail, open_or_exit
from .export import load_for_reading, open_for_reading


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="address to listen on (default: settings.http or 127.0.0.1)")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(min=0, max=65535, help="port (default: settings.http or 8080; 0: any free)"),
    ] = None,
    config: ConfigOpt = None,
    database: DatabaseOpt = None,
    log_level: LogLevelOpt = "INFO",
) -> None:
    """Serve exports, /stories, /items, /healthz and /metrics over HTTP (read-only); with
    settings.websub, also receive WebSub deliveries on /websub/{id}."""
    from ..server import create_app, serve_forever  # Starlette, uvicorn: for this command only

    cfg = load_for_reading(config, database)
    setup_logging(log_level)
    http = cfg.settings.http
    bind_host = host or (http.host if http else "127.0.0.1")
    bind_port = port if port is not None else (http.port if http else 8080)
    # read-only, unless it receives WebSub deliveries (they are stored: see push.md)
    store = (
        open_for_reading(cfg) if cfg.settings.websub is None else open_or_exit(cfg, migrate=True)
    )
    assert store is not None
    try:
        receiver = None
        on_stop: Callable[[], Awaitable[None]] | None = None
        if cfg.settings.websub is not None:
            # WebSub deliveries go through the pipeline (parse, article pages, dedup,
            # store): a small one of its own, never polling; subscribing is the daemon's
            # (or `run --once`'s) part
            from ..scheduler import Runner
            from ..websub.receiver import Receiver

            # a push now and then: parsed in threads of this process (no process pool to
            # start, nor to leave behind when a signal ends the server)
            threads = ThreadPoolExecutor(2, thread_name_prefix="push")
            runner = Runner(cfg, store, pool=threads)
            receiver = Receiver(store, runner.pipeline, lambda: cfg)

            async def on_stop() -> None:
                await runner.close()
                await asyncio.to_thread(threads.shutdown, wait=True)

        app_ = create_app(store, lambda: cfg, websub=receiver)
        err.print(f"serving on http://{bind_host}:{bind_port}/", highlight=False)
        serve_forever(app_, bind_host, bind_port, on_stop=on_stop)
    except AggregatorError as exc:
        raise fail(str(exc), 3) from None
    finally:
        store.close()
