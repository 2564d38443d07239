"""The read-only HTTP face (Starlette on uvicorn).

- ``GET /export/{format}``: any export, with the CLI's filters as query parameters
  (``since``, ``until``, ``feed``…, ``tag``…, ``search``, ``limit``, ``per_item``);
- ``GET /stories``, ``GET /items``: JSON pages, newest first, ``?cursor=`` for the next;
- ``GET /healthz``: 200 when the database answers and some feed was polled successfully
  within ``settings.health_max_age``, else 503 with the reason;
- ``GET /metrics``: Prometheus text format.

Served by ``aggregator serve`` or, with ``settings.http``, from the daemon itself.
Nothing here writes to the database, but for the WebSub callback (``GET`` and ``POST
/websub/{id}``), mounted only when ``settings.websub`` is set and kept in its own module
(``websub/routes.py``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import itertools
import json
import socket
from collections.abc import Awaitable, Callable, Iterable, Iterator
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any

import uvicorn
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from . import export
from .config import VERSION, Config
from .dates import in_query_range as in_range
from .errors import AggregatorError, StoreError
from .export.digest import CONTENT_SECURITY_POLICY
from .export.model import entry_from_story
from .export.rows import row
from .metrics import Metrics, blocked_gauge
from .store import Store, blocked
from .store.queries import ChangeValidator, Cursor, ExportFilter, Queries, StoryRecord
from .websub import routes as websub_routes
from .websub.receiver import Receiver

DEFAULT_PAGE = 50
MAX_PAGE = 500
PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# feed formats: shared caches may keep an answer a minute; after that, revalidate (ETag)
CACHE_CONTROL = "public, max-age=60"


def utcnow() -> datetime:
    return datetime.now(UTC)


class BadRequest(ValueError):
    pass


# ---- query parameters ----------------------------------------------------------------
# Every parameter is checked before the first byte of an answer is sent: a bad one is a
# 400 naming it, never a 500 or a 200 cut short.

MAX_ID = 2**63 - 1  # ids are signed 64-bit on every backend
MAX_CURSOR_LENGTH = 200  # an encoded cursor is about 60 characters


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _limit(request: Request, default: int | None) -> int | None:
    value = request.query_params.get("limit")
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise BadRequest(f"limit must be a whole number, not {value[:100]!r}") from None
    if not 1 <= number <= export.MAX_LIMIT:
        raise BadRequest(f"limit must be a whole number from 1 to {export.MAX_LIMIT}")
    return number


def _filter(request: Request, now: datetime, *, limit: int | None) -> ExportFilter:
    q = request.query_params
    try:
        return export.build_filter(
            now=now,
            since=q.get("since") or None,
            until=q.get("until") or None,
            feeds=[v for v in q.getlist("feed") if v],
            tags=[v for v in q.getlist("tag") if v],
            search=q.get("search") or q.get("q") or None,
            limit=limit,
        )
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


def encode_cursor(cursor: Cursor) -> str:
    raw = json.dumps([cursor.first_seen_at.isoformat(), cursor.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(value: str) -> Cursor:
    """A cursor made by ``encode_cursor``; anything else is a BadRequest."""
    bad = BadRequest("invalid cursor (pass back a next_cursor value unchanged)")
    if len(value) > MAX_CURSOR_LENGTH:
        raise bad
    try:
        data = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
    except (ValueError, binascii.Error, RecursionError):
        raise bad from None
    if not isinstance(data, list) or len(data) != 2:
        raise bad
    when, ident = data
    if not isinstance(when, str) or type(ident) is not int or not 1 <= ident <= MAX_ID:
        raise bad
    try:
        moment = datetime.fromisoformat(when)
    except ValueError:
        raise bad from None
    if moment.tzinfo is None or not in_range(moment):
        raise bad
    return Cursor(moment.astimezone(UTC), ident)


def _links(request: Request, public_url: str | None) -> tuple[str, str]:
    """(the site link, this document's URL) for an export: from ``settings.public_url``
    when set, else from the request (its Host header: see docs/exports.md)."""
    if not public_url:
        return str(request.base_url), str(request.url)
    base = public_url.rstrip("/")
    query = request.url.query
    return base + "/", base + request.url.path + (f"?{query}" if query else "")


def _etag_matches(header: str, etag: str) -> bool:
    """If-None-Match uses the weak comparison (RFC 9110, 13.1.2)."""
    if header.strip() == "*":
        return True
    opaque = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == opaque for tag in header.split(","))


def _not_modified_since(header: str, last_changed: datetime) -> bool:
    try:
        since = parsedate_to_datetime(header)
    except (TypeError, ValueError, IndexError):
        return False  # a date we cannot read: send the whole document
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    return last_changed.replace(microsecond=0) <= since


def _http_date(value: datetime) -> str:
    return format_datetime(value.astimezone(UTC), usegmt=True)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _date(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def story_object(story: StoryRecord) -> dict[str, Any]:
    entry = entry_from_story(story)
    return {
        "story_id": story.id,
        "title": entry.title,
        "url": entry.url,
        "first_seen_at": _date(story.first_seen_at),
        "last_seen_at": _date(story.last_seen_at),
        "source_count": story.source_count,
        "item_count": story.item_count,
        "representative_item_id": story.representative.id,
        "teaser": entry.teaser or None,
        "sources": [
            {
                "feed": s.name,
                "feed_url": s.feed_url,
                "url": s.url,
                "first_seen_at": _date(s.first_seen_at),
            }
            for s in entry.sources
        ],
    }


# ---- metrics from the database ---------------------------------------------------------


class DatabaseCollector(Collector):
    """Gauges read from the database at scrape time (right in any process)."""

    def __init__(self, queries: Queries, clock: Callable[[], datetime]) -> None:
        self.queries = queries
        self.clock = clock

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily("aggregator_database_up", "1 when the database answers.")
        try:
            counts = self.queries.feed_state_counts(self.clock())
            last = self.queries.last_success_at()
            blocked_counts = blocked.counts_by_feed(self.queries.engine)
        except StoreError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        feeds = GaugeMetricFamily("aggregator_feeds", "Feeds by state.", labels=["state"])
        for state, count in counts.items():
            feeds.add_metric([state], count)
        yield feeds
        if blocked_counts:  # entry filters, per feed (store/blocked.py)
            yield blocked_gauge(blocked_counts)
        if last is not None:
            yield GaugeMetricFamily(
                "aggregator_last_success_timestamp_seconds",
                "When some feed was last polled successfully (Unix time).",
                value=last.timestamp(),
            )


# ---- the application ---------------------------------------------------------------------


def create_app(
    store: Store,
    config: Callable[[], Config],
    *,
    metrics: Metrics | None = None,
    clock: Callable[[], datetime] = utcnow,
    websub: Receiver | None = None,
) -> Starlette:
    """The ASGI app. ``config`` is called per request (the daemon reloads it);
    ``clock`` gives "now" for filters and the health check; ``websub``: the WebSub
    callback routes are mounted (the only ones that write)."""
    queries = Queries(store)
    counters = metrics or Metrics()
    db_registry = CollectorRegistry(auto_describe=False)
    db_registry.register(DatabaseCollector(queries, clock))

    async def check_feeds(f: ExportFilter) -> Response | None:
        """A 400 for a feed name that matches no feed (the same on every endpoint)."""
        if not f.feeds:
            return None
        try:
            unknown = await run_in_threadpool(queries.unknown_feeds, f.feeds)
        except StoreError as exc:
            return _error(503, str(exc))
        if unknown:
            return _error(400, f"no feed named {', '.join(map(repr, unknown))}")
        return None

    async def lag_headers(f: ExportFilter) -> dict[str, str]:
        """A search's ``X-Search-Lag``: the items the full-text index does not hold yet
        (SQLite indexes new items in batches, a few seconds behind; see exports.md)."""
        if f.search is None:
            return {}
        lag = await run_in_threadpool(queries.store.search_lag)
        if not lag.items or lag.oldest is None:
            return {"X-Search-Lag": "0"}
        age = max(0.0, (clock() - lag.oldest).total_seconds())
        return {"X-Search-Lag": f"{lag.items} items, {age:.0f} s"}

    async def export_endpoint(request: Request) -> Response:
        name = request.path_params["format"]
        fmt = export.FORMATS.get(name)
        if fmt is None:
            return _error(404, f"unknown format {name!r} (one of {', '.join(export.FORMATS)})")
        now = clock()
        cfg = config()
        try:
            f = _filter(request, now, limit=_limit(request, None))
        except BadRequest as exc:
            return _error(400, str(exc))
        if (problem := await check_feeds(f)) is not None:
            return problem
        link, feed_url = _links(request, cfg.settings.public_url)
        req = export.ExportRequest(
            format=name,
            filter=f,
            per_item=_flag(request.query_params.get("per_item")),
            title=request.query_params.get("title") or None,
            link=link,
            feed_url=feed_url,
        )
        feed_limit = cfg.settings.feed_export_limit
        headers = {"X-Content-Type-Options": "nosniff"}
        try:
            headers.update(await lag_headers(f))
        except StoreError as exc:
            return _error(503, str(exc))
        if name == "html":
            headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        if name in export.FEED_FORMATS:
            try:
                validator = await run_in_threadpool(
                    queries.change_validator,
                    export.with_defaults(req, now, feed_limit=feed_limit).filter,
                    per_item=req.per_item,
                )
            except StoreError as exc:
                return _error(503, str(exc))
            headers.update(_validators(req, validator))
            if _not_modified(request, headers["ETag"], validator.last_changed):
                return Response(status_code=304, headers=headers)
        chunks = export.stream(queries, req, now=now, feeds=cfg.feeds, feed_limit=feed_limit)
        try:  # the head and the first rows: a failing query is still a clean error
            first = await run_in_threadpool(_take, chunks, 2)
        except StoreError as exc:
            return _error(503, str(exc))
        except ValueError as exc:
            return _error(400, str(exc))
        body = itertools.chain(first, chunks)
        return StreamingResponse(
            iterate_in_threadpool(_encode(body)), media_type=fmt.media_type, headers=headers
        )

    async def page(request: Request, kind: str) -> Response:
        now = clock()
        try:
            limit = min(_limit(request, DEFAULT_PAGE) or DEFAULT_PAGE, MAX_PAGE)
            f = _filter(request, now, limit=limit + 1)
            raw_cursor = request.query_params.get("cursor")
            after = decode_cursor(raw_cursor) if raw_cursor else None
        except BadRequest as exc:
            return _error(400, str(exc))
        if (problem := await check_feeds(f)) is not None:
            return problem

        def load() -> tuple[list[dict[str, Any]], Cursor | None]:
            if kind == "stories":
                stories = list(queries.iter_stories(f, after=after))
                more = len(stories) > limit
                stories = stories[:limit]
                last = stories[-1] if more and stories else None
                cursor = Cursor(last.first_seen_at, last.id) if last else None
                return [story_object(s) for s in stories], cursor
            items = list(queries.iter_items(f, newest_first=True, after=after))
            more = len(items) > limit
            items = items[:limit]
            tail = items[-1] if more and items else None
            cursor = Cursor(tail.first_seen_at, tail.id) if tail else None
            return [row(i) for i in items], cursor

        try:
            objects, cursor = await run_in_threadpool(load)
            lag = await lag_headers(f)
        except StoreError as exc:
            return _error(503, str(exc))
        return JSONResponse(
            {kind: objects, "next_cursor": encode_cursor(cursor) if cursor else None},
            headers=lag,
        )

    async def stories_endpoint(request: Request) -> Response:
        return await page(request, "stories")

    async def items_endpoint(request: Request) -> Response:
        return await page(request, "items")

    async def healthz(_request: Request) -> Response:
        max_age = config().settings.health_max_age
        now = clock()
        try:
            await run_in_threadpool(store.ping)
            last = await run_in_threadpool(queries.last_success_at)
        except StoreError as exc:
            return JSONResponse({"status": "unhealthy", "reason": str(exc)}, status_code=503)
        body: dict[str, Any] = {
            "last_success_at": _date(last),
            "health_max_age_seconds": max_age,
        }
        if last is None:
            body.update(status="unhealthy", reason="no feed has been polled successfully yet")
            return JSONResponse(body, status_code=503)
        age = (now - last).total_seconds()
        body["age_seconds"] = round(age, 3)
        if age > max_age:
            body.update(
                status="unhealthy",
                reason=(
                    f"no feed polled successfully for {age:.0f} s "
                    f"(health_max_age is {max_age:.0f} s)"
                ),
            )
            return JSONResponse(body, status_code=503)
        body["status"] = "ok"
        return JSONResponse(body)

    async def metrics_endpoint(_request: Request) -> Response:
        def render() -> bytes:
            return generate_latest(counters.registry) + generate_latest(db_registry)

        return Response(await run_in_threadpool(render), media_type=PROMETHEUS_TYPE)

    return Starlette(
        routes=[
            Route("/export/{format}", export_endpoint, methods=["GET", "HEAD"]),
            Route("/stories", stories_endpoint, methods=["GET", "HEAD"]),
            Route("/items", items_endpoint, methods=["GET", "HEAD"]),
            Route("/healthz", healthz, methods=["GET", "HEAD"]),
            Route("/metrics", metrics_endpoint, methods=["GET", "HEAD"]),
            *(websub_routes.routes(websub) if websub is not None else ()),
        ]
    )


def _encode(chunks: Iterator[str]) -> Iterator[bytes]:
    for chunk in chunks:
        yield chunk.encode("utf-8")


def _take(chunks: Iterator[str], count: int) -> list[str]:
    return list(itertools.islice(chunks, count))


def _validators(req: export.ExportRequest, validator: ChangeValidator) -> dict[str, str]:
    """ETag, Last-Modified and Cache-Control of a feed export. The ETag is weak: the
    document says when it was generated, so two answers with one ETag can differ in that
    line; everything else it shows is in the digest (rows, feed names, the request)."""
    key = json.dumps(
        [VERSION, validator.digest, req.format, req.per_item, req.title, req.link, req.feed_url]
    )
    headers = {
        "ETag": f'W/"{hashlib.sha256(key.encode()).hexdigest()[:32]}"',
        "Cache-Control": CACHE_CONTROL,
    }
    if validator.last_changed is not None:
        headers["Last-Modified"] = _http_date(validator.last_changed)
    return headers


def _not_modified(request: Request, etag: str, last_changed: datetime | None) -> bool:
    """If-None-Match decides when present; else If-Modified-Since (RFC 9110, 13.2.2)."""
    match = request.headers.get("if-none-match")
    if match is not None:
        return _etag_matches(match, etag)
    since = request.headers.get("if-modified-since")
    if since is None or last_changed is None:
        return False
    return _not_modified_since(since, last_changed)


# ---- running it ----------------------------------------------------------------------------


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: any free port); a clear error when it is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise AggregatorError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock


def _uvicorn_config(app: Starlette, *, access_log: bool) -> uvicorn.Config:
    return uvicorn.Config(
        app, log_config=None, access_log=access_log, lifespan="off", server_header=False
    )


class _NoSignals(uvicorn.Server):
    """uvicorn inside the daemon: the daemon owns SIGTERM/SIGINT, not uvicorn."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class EmbeddedServer:
    """The HTTP face running on the daemon's event loop."""

    def __init__(self, app: Starlette, host: str, port: int) -> None:
        self.sock = bind(host, port)
        self.server = _NoSignals(_uvicorn_config(app, access_log=False))
        self.task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        port: int = self.sock.getsockname()[1]
        return port

    async def start(self) -> None:
        self.task = asyncio.create_task(self.server.serve(sockets=[self.sock]))
        while not self.server.started:
            if self.task.done():
                self.task.result()
                raise AggregatorError("the HTTP server stopped while starting")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self.server.should_exit = True
        if self.task is not None:
            await self.task
        self.sock.close()


class _Serving(uvicorn.Server):
    """uvicorn for ``aggregator serve``, with what must stop on its event loop after it."""

    def __init__(
        self, config: uvicorn.Config, on_stop: Callable[[], Awaitable[None]] | None
    ) -> None:
        super().__init__(config)
        self.on_stop = on_stop

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # still inside uvicorn's signal capture: it re-raises SIGTERM once serve() ends
        try:
            await super().shutdown(sockets)
        finally:
            if self.on_stop is not None:
                await self.on_stop()


def serve_forever(
    app: Starlette,
    host: str,
    port: int,
    *,
    on_stop: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """``aggregator serve``: run until SIGINT/SIGTERM (uvicorn handles the signals);
    ``on_stop`` runs on the server's event loop once it stopped."""
    sock = bind(host, port)
    try:
        _Serving(_uvicorn_config(app, access_log=True), on_stop).run(sockets=[sock])
    finally:
        sock.close()
