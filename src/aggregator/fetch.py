"""HTTP fetching: the only module that imports ``httpx`` (and only when the ``httpx``
transport is used: the default aiohttp path never loads it, about 2 MB less resident
memory in the daemon's main process).

One shared async client; conditional GET; redirects followed by hand (so every hop
passes the address guard); connect/read/total timeouts; bodies streamed and cut at
``max_body_bytes`` after decompression; global and per-host concurrency limits and a
minimum delay between two requests to one host.

Address guard: before connecting, the host name is resolved once, every address is
checked against the blocked ranges (loopback, private, link-local, CGNAT, multicast,
reserved, unspecified; IPv4 and IPv6, IPv4-mapped IPv6 included) unless it lies in
``allow_private_networks``, and the request goes to the checked addresses (Host header
and TLS SNI keep the name), so no second lookup can swap them. The addresses are tried
in the resolver's order, the next one only when connecting to the previous one failed
(refused, unreachable, connect timeout: nothing was sent yet); each but the last gets
at most ``fallback_connect_timeout``.

Per-feed options (``records.HttpOptions``: headers, basic auth, cookies, user agent) go
only to the feed's own origin (:func:`same_origin`), checked on every hop: not to article
pages on other hosts, not across a redirect to another host. Secret values are revealed
only here, to build the request, and scrubbed from every error message.

Proxies (a feed's ``http.proxy``, else ``settings.http_proxy``; aiohttp transport only):
HTTP(S) proxies through aiohttp's own ``proxy=``, SOCKS5 through ``aiohttp-socks``. The
address guard still runs first: the target's name is resolved and every address checked
(``allow_private_networks``) before the request is handed to the proxy, which then
connects by name (the proxy resolves it again; the proxy's own address is the operator's
and is not checked). See docs/design.md, "Address guard".

Unresponsive hosts: when no address of a host accepts a connection, the host is marked
for ``unresponsive_hold`` seconds, during which its *article pages* are not requested (a
dead host costs one connect timeout per poll, not one per article). Feed documents are
always requested. A slow response (read or total timeout) marks nothing: one slow path
says nothing about the host's other paths.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import socket
import ssl
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

import aiohttp
import certifi

from .errors import (
    BlockedAddress,
    FetchError,
    FetchTimeout,
    TooLarge,
    TooManyRedirects,
)
from .records import FetchResult, HttpOptions
from .secret import Secret

if TYPE_CHECKING:
    import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_REDIRECTS = {301, 302, 303, 307, 308}
_PERMANENT = {301, 308}
FEED_ACCEPT = (
    "application/atom+xml, application/rss+xml, application/feed+json, application/json;q=0.9, "
    "application/rdf+xml;q=0.9, application/xml;q=0.8, text/xml;q=0.8, text/html;q=0.5, */*;q=0.1"
)
PAGE_ACCEPT = "text/html, application/xhtml+xml;q=0.9, */*;q=0.5"
POST_ANSWER_BYTES = 64 * 1024  # of the answer to a POST (a webhook's receiver), read at most


@dataclass(frozen=True)
class FetchLimits:
    user_agent: str
    connect_timeout: float = 10.0
    read_timeout: float = 20.0
    total_timeout: float = 60.0
    max_body_bytes: int = 10 * 1024 * 1024
    max_redirects: int = 5
    concurrency: int = 16
    per_host_concurrency: int = 2
    per_host_delay: float = 1.0
    allow_private_networks: tuple[str, ...] = ()
    # a host that accepted no connection: its article pages are not requested this long
    unresponsive_hold: float = 300.0
    fallback_connect_timeout: float = 2.0  # connect timeout of an address that has a next one
    ca_bundle: str | None = None  # extra trusted CAs (PEM file) for https
    transport: str = "aiohttp"  # "aiohttp" (aiohttp's client, several times less CPU) or "httpx"
    proxy: Secret | None = None  # settings.http_proxy: every request without a feed's own


def origin_of(url: str) -> str:
    """``scheme://host:port`` of a URL (the default port written out), lower-cased."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    return f"{scheme}://{(parts.hostname or '').lower()}:{port}"


def same_origin(origin: str, url: str) -> bool:
    """Do a feed's options (credentials) go to ``url``? Only to the feed's own scheme,
    host and port, except that a plain-http feed's options follow it to https on the
    same host (the usual upgrade redirect); never the other way round."""
    target = origin_of(url)
    if target == origin:
        return True
    parts = urlsplit(origin)
    return parts.scheme == "http" and parts.port == 80 and target == f"https://{parts.hostname}:443"


def option_headers(options: HttpOptions) -> dict[str, str]:
    """The request headers a feed's options add (secret values revealed)."""
    headers = {name: value.reveal() for name, value in options.headers}
    if options.basic_auth is not None:
        user, password = (part.reveal() for part in options.basic_auth)
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        headers["Authorization"] = f"Basic {token}"
    if options.cookies:
        headers["Cookie"] = "; ".join(f"{name}={value.reveal()}" for name, value in options.cookies)
    if options.user_agent:
        headers["User-Agent"] = options.user_agent
    return headers


def _merged(base: dict[str, str], extra: dict[str, str]) -> dict[str, str]:
    """``base`` with ``extra`` on top, header names compared without case."""
    names = {name.lower() for name in extra}
    return {**{k: v for k, v in base.items() if k.lower() not in names}, **extra}


def _secret_values(options: HttpOptions | None, proxy: Secret | None) -> list[str]:
    values = [] if proxy is None else [proxy.reveal()]
    if options is not None:
        values += [value.reveal() for _, value in (*options.headers, *options.cookies)]
        if options.basic_auth is not None:
            values += [part.reveal() for part in options.basic_auth]
            user, password = (part.reveal() for part in options.basic_auth)
            values.append(base64.b64encode(f"{user}:{password}".encode()).decode("ascii"))
    if proxy is not None:
        parts = urlsplit(proxy.reveal())
        values += [v for v in (parts.username, parts.password) if v]
    # longest first: a value that contains another is replaced whole
    return sorted((v for v in values if len(v) >= 3), key=len, reverse=True)


def scrub(error: FetchError, secrets: Sequence[str]) -> FetchError:
    """The error with every secret value in its message replaced by ``***``."""
    message = str(error)
    hidden = message
    for value in secrets:
        hidden = hidden.replace(value, "***")
    if hidden == message:
        return error
    scrubbed = type(error).__new__(type(error))
    scrubbed.__dict__.update(error.__dict__)
    scrubbed.args = (hidden, *error.args[1:])
    return scrubbed


def _ssl_context(ca_bundle: str | None) -> ssl.SSLContext:
    """Certificate verification on (certifi's roots), plus an operator's own CA bundle:
    what ``httpx.create_ssl_context(trust_env=False)`` makes, without loading httpx."""
    context = ssl.create_default_context(cafile=certifi.where())
    if ca_bundle:
        context.load_verify_locations(cafile=ca_bundle)
    return context


@dataclass(frozen=True)
class _Pool:
    """Connections kept by either transport (``httpx.Limits``' fields and defaults)."""

    max_connections: int
    max_keepalive_connections: int
    keepalive_expiry: float = 5.0


class _AiohttpClient:
    """aiohttp's client session, made on first use (it needs the running loop): several
    times less CPU per request than httpx's pool (its issue #3215), and used directly:
    httpx's request and response objects around it cost as much again (see
    docs/performance.md, eighth round). Requests still go to the address our guard
    checked: the URL carries the IP, Host and SNI the name."""

    def __init__(self, pool: _Pool, ssl_context: ssl.SSLContext, limits: FetchLimits):
        self._pool = pool
        self._ssl = ssl_context
        self._session: aiohttp.ClientSession | None = None
        self._socks: dict[str, aiohttp.ClientSession] = {}  # proxy URL -> its session
        # a connect or read timeout per step, as httpx counts them; the total is ours
        self.timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=limits.connect_timeout,
            sock_read=limits.read_timeout,
            connect=limits.total_timeout,
        )

    def socks_session(self, proxy: str) -> aiohttp.ClientSession:
        """A session of its own for each SOCKS5 proxy (aiohttp-socks is a connector): the
        proxy resolves the target's name (rdns), which was checked before."""
        session = self._socks.get(proxy)
        if session is None:
            from aiohttp_socks import ProxyConnector  # only configs with a SOCKS proxy

            connector = ProxyConnector.from_url(
                proxy,
                rdns=True,
                ssl=self._ssl,
                limit=self._pool.max_connections,
                keepalive_timeout=self._pool.keepalive_expiry,
            )
            session = aiohttp.ClientSession(
                connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False
            )
            self._socks[proxy] = session
        return session

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._pool.max_connections,
                ssl=self._ssl,
                keepalive_timeout=self._pool.keepalive_expiry,
                use_dns_cache=False,
            )
            # no cookies: a feed fetch is the same request every time
            self._session = aiohttp.ClientSession(
                connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
        for session in self._socks.values():
            await session.close()


async def _read_body(chunks: AsyncIterator[bytes], status: int, limit: int, url: str) -> bytes:
    """A response's decoded body (none for a redirect), cut at ``limit`` bytes; a .gz file
    served without Content-Encoding (static servers do this) is decompressed too."""
    parts: list[bytes] = []
    size = 0
    if status not in _REDIRECTS:
        async for chunk in chunks:
            size += len(chunk)
            if size > limit:
                raise TooLarge(
                    f"response body larger than max_body_bytes ({limit} bytes)",
                    url=url,
                    status=status,
                )
            parts.append(chunk)
    body = b"".join(parts)
    if body[:2] == b"\x1f\x8b":
        body = _gunzip(body, limit, url, status)
    return body


def _gunzip(body: bytes, limit: int, url: str, status: int) -> bytes:
    """Decompress a gzip body that no Content-Encoding announced, within ``limit`` bytes
    (a bomb is cut off like any oversized body); not gzip after all: the body as it is."""
    inflater = zlib.decompressobj(wbits=31)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error:
        return body
    if len(data) > limit:
        raise TooLarge(
            f"response body larger than max_body_bytes ({limit} bytes) once decompressed",
            url=url,
            status=status,
        )
    return data


def is_blocked_address(address: IPAddress, allowed: Sequence[IPNetwork] = ()) -> bool:
    """True when the address is not a public unicast address and not explicitly allowed."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return is_blocked_address(address.ipv4_mapped, allowed)
    if any(address.version == net.version and address in net for net in allowed):
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.sixtofour is not None:
        return is_blocked_address(address.sixtofour, allowed)
    return (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or (isinstance(address, ipaddress.IPv4Address) and address in _CGNAT)
        or not address.is_global
    )


async def system_resolver(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


@dataclass
class _HostGate:
    semaphore: asyncio.Semaphore
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    next_start: float = 0.0
    users: int = 0  # requests holding or waiting for this gate


GATE_SWEEP_AT = 1024  # host gates kept before idle ones are dropped (see Fetcher._sweep)


class Fetcher:
    """Shared async HTTP client with our limits; use ``async with Fetcher(limits)``."""

    def __init__(
        self,
        limits: FetchLimits,
        resolver: Resolver | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.limits = limits
        self._resolver = resolver or system_resolver
        self._allowed: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(n, strict=False) for n in limits.allow_private_networks
        )
        self._global = asyncio.Semaphore(limits.concurrency)
        self._hosts: dict[str, _HostGate] = {}
        pool = _Pool(
            max_connections=max(limits.concurrency * 2, 10),
            max_keepalive_connections=max(limits.concurrency, 10),
        )
        ssl_context = _ssl_context(limits.ca_bundle)
        self._aiohttp: _AiohttpClient | None = None
        self._timeout: dict[str, float | None] = {}  # the httpx path's
        self._headers: dict[str, str] = {}  # the httpx path's (aiohttp sets its own)
        if transport is None and limits.transport == "aiohttp":
            self._aiohttp = _AiohttpClient(pool, ssl_context, limits)
        else:
            transport = self._httpx_transport(transport, pool, ssl_context)
        # Requests go straight to the transport. httpx's client would add nothing we use
        # (redirects are followed here, no auth) but a cookie jar that keeps every feed
        # server's cookies for the daemon's lifetime and sends them back, and ~20 % of the
        # CPU of a 304 poll (building the request, extracting cookies).
        self._transport = transport
        self._unresponsive: dict[str, float] = {}  # netloc -> monotonic time it may be retried
        self._sweep_at = GATE_SWEEP_AT

    def _httpx_transport(
        self,
        transport: httpx.AsyncBaseTransport | None,
        pool: _Pool,
        ssl_context: ssl.SSLContext,
    ) -> httpx.AsyncBaseTransport:
        """The httpx path: ``transport`` (a test's), or httpx's own pool; its timeouts and
        default headers."""
        import httpx  # only this path loads it

        limits = self.limits
        self._timeout = httpx.Timeout(
            connect=limits.connect_timeout,
            read=limits.read_timeout,
            write=limits.read_timeout,
            pool=limits.total_timeout,
        ).as_dict()
        if transport is None:
            transport = httpx.AsyncHTTPTransport(
                verify=ssl_context,
                limits=httpx.Limits(
                    max_connections=pool.max_connections,
                    max_keepalive_connections=pool.max_keepalive_connections,
                    keepalive_expiry=pool.keepalive_expiry,
                ),
                trust_env=False,
            )
        # (a client without a transport would build one, and an SSL context: 0.1 s)
        defaults = httpx.AsyncClient(trust_env=False, transport=transport).headers
        # httpx's defaults (Accept-Encoding for the decoders installed, keep-alive), ours
        self._headers = {
            "Accept-Encoding": defaults["accept-encoding"],
            "Connection": "keep-alive",
            "User-Agent": limits.user_agent,
        }
        return transport

    async def __aenter__(self) -> Fetcher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._aiohttp is not None:
            await self._aiohttp.aclose()
        if self._transport is not None:
            await self._transport.aclose()

    def _gate(self, host: str) -> _HostGate:
        gate = self._hosts.get(host)
        if gate is None:
            if len(self._hosts) >= self._sweep_at:
                self._sweep()
            gate = _HostGate(asyncio.Semaphore(self.limits.per_host_concurrency))
            self._hosts[host] = gate
        return gate

    def _sweep(self) -> None:
        """Drop the gates no request holds or waits for and whose delay has passed (a new
        gate for that host behaves the same), and the expired unresponsive marks. Article
        links reach ever new hosts: without this, a daemon kept a gate for every host it
        ever fetched from, for months."""
        now = time.monotonic()
        for host, gate in list(self._hosts.items()):
            if gate.users == 0 and gate.next_start <= now:
                del self._hosts[host]
        for netloc, until in list(self._unresponsive.items()):
            if until <= now:
                del self._unresponsive[netloc]
        # amortized: the next sweep when the table has doubled again
        self._sweep_at = max(GATE_SWEEP_AT, 2 * len(self._hosts))

    @contextlib.asynccontextmanager
    async def _slot(self, host: str, delay: float) -> AsyncIterator[None]:
        gate = self._gate(host)
        gate.users += 1
        try:
            async with self._global, gate.semaphore:
                if delay > 0:
                    async with gate.lock:
                        wait = gate.next_start - time.monotonic()
                        if wait > 0:
                            await asyncio.sleep(wait)
                        gate.next_start = time.monotonic() + delay
                yield
        finally:
            gate.users -= 1

    async def check_address(self, url: str) -> tuple[str, list[str]]:
        """Resolve the URL's host once and check every address; return (host, the checked
        addresses in the resolver's order). One blocked address refuses the host."""
        parts = urlsplit(url)
        host = parts.hostname
        if parts.scheme not in ("http", "https") or not host:
            raise FetchError(f"not an http(s) URL: {url}", url=url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            literal: IPAddress | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is not None:
            found = [str(literal)]
        else:
            try:
                found = await self._resolver(host, port)
            except (OSError, UnicodeError) as exc:
                raise FetchError(f"cannot resolve host {host}: {exc}", url=url) from None
            if not found:
                raise FetchError(f"cannot resolve host {host}: no addresses", url=url)
        checked: list[str] = []
        for text in found:
            address = ipaddress.ip_address(text.split("%", 1)[0])
            if is_blocked_address(address, self._allowed):
                raise BlockedAddress(
                    f"refused to connect to {host} ({address}): a private, loopback or "
                    "reserved address not in allow_private_networks",
                    url=url,
                )
            if str(address) not in checked:
                checked.append(str(address))
        return host, checked

    async def fetch(
        self,
        url: str,
        *,
        etag: str | None = None,
        last_modified: str | None = None,
        page: bool = False,
        options: HttpOptions | None = None,
    ) -> FetchResult:
        """GET ``url`` (any final status is returned; network failures raise FetchError).

        ``options``: the feed's own HTTP options (sent to its origin only, hop by hop)
        and proxy (else ``limits.proxy``)."""
        proxy = options.proxy if options is not None and options.proxy else self.limits.proxy
        secrets = _secret_values(options, proxy)
        try:
            return await self._fetch(url, etag, last_modified, page, options, proxy)
        except FetchError as exc:
            if not secrets:
                raise
            raise scrub(exc, secrets) from None

    async def post(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str] | None = None,
        *,
        content_type: str | None = None,
        timeout: float | None = None,
    ) -> FetchResult:
        """POST ``body`` to ``url`` (a webhook delivery, a WebSub hub's subscription
        request): the address guard as for every request; redirects are not followed (a
        POST is not repeated elsewhere: a 3xx is the answer); at most ``POST_ANSWER_BYTES``
        of the answer read (a longer one is answered by its status alone). No complete
        answer within ``timeout`` seconds (default: the total timeout) raises
        FetchTimeout; other network failures raise FetchError."""
        started = time.monotonic()
        limit = self.limits.total_timeout if timeout is None else timeout
        host, addresses = await self.check_address(url)
        sent = {"Accept": "*/*", **(headers or {})}
        if content_type is not None:
            sent["Content-Type"] = content_type
        answer_headers: dict[str, str] = {}
        answer = b""
        async with self._slot(host, 0.0):
            try:
                async with asyncio.timeout(limit):
                    status, answer_headers, answer = await self._request_any(
                        url, host, addresses, sent, ("POST", body)
                    )
            except TimeoutError:
                raise FetchTimeout(f"no complete answer within {limit:g} s", url=url) from None
            except TooLarge as exc:
                status = exc.status or 0
        return FetchResult(
            url=url,
            final_url=url,
            status=status,
            headers=answer_headers,
            body=answer,
            elapsed=time.monotonic() - started,
        )

    def _mark_unresponsive(self, url: str) -> None:
        netloc = urlsplit(url).netloc.lower()
        self._unresponsive[netloc] = time.monotonic() + self.limits.unresponsive_hold

    def _check_responsive(self, url: str) -> None:
        netloc = urlsplit(url).netloc.lower()
        until = self._unresponsive.get(netloc)
        if until is None:
            return
        if until <= time.monotonic():
            del self._unresponsive[netloc]
            return
        raise FetchTimeout(
            f"{netloc} accepted no connection on an earlier request; its article pages are "
            f"not requested for {self.limits.unresponsive_hold:g} s",
            url=url,
        )

    async def _fetch(
        self,
        url: str,
        etag: str | None,
        last_modified: str | None,
        page: bool,
        options: HttpOptions | None,
        proxy: Secret | None,
    ) -> FetchResult:
        started = time.monotonic()
        headers = {"Accept": PAGE_ACCEPT if page else FEED_ACCEPT}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        current = url
        seen = {url}
        permanent: str | None = None
        permanent_chain = True
        hops = 0
        deadline: float | None = None
        delay = self.limits.per_host_delay if page else 0.0
        while True:
            if page:  # a feed document is always requested (see the module docstring)
                self._check_responsive(current)
            host, addresses = await self.check_address(current)
            hop_headers = headers
            # checked on every hop: a redirect to another host gets none of them
            if (
                options is not None
                and options.sends_credentials
                and same_origin(options.origin, current)
            ):
                hop_headers = _merged(headers, option_headers(options))
            async with self._slot(host, delay):
                # the total timeout runs from the first byte sent, not while queueing
                # behind the per-host limits
                if deadline is None:
                    deadline = asyncio.get_running_loop().time() + self.limits.total_timeout
                try:
                    async with asyncio.timeout_at(deadline):
                        if proxy is not None:
                            status, resp_headers, body = await self._proxied(
                                current, host, hop_headers, proxy.reveal()
                            )
                        else:
                            status, resp_headers, body = await self._request_any(
                                current, host, addresses, hop_headers
                            )
                except TimeoutError:
                    raise FetchTimeout(
                        f"no complete response within {self.limits.total_timeout:g} s "
                        "(total timeout)",
                        url=url,
                    ) from None
            if status in _REDIRECTS and "location" in resp_headers:
                target = urljoin(current, resp_headers["location"].strip())
                target = urlunsplit(urlsplit(target)._replace(fragment=""))
                hops += 1
                if target in seen:
                    raise TooManyRedirects(f"redirect loop at {target}", url=url)
                if hops > self.limits.max_redirects:
                    raise TooManyRedirects(
                        f"more than {self.limits.max_redirects} redirects", url=url
                    )
                if permanent_chain and status in _PERMANENT:
                    permanent = target
                else:
                    permanent_chain = False
                seen.add(target)
                if urlsplit(target).netloc != urlsplit(current).netloc:
                    # validators belong to the original resource
                    headers.pop("If-None-Match", None)
                    headers.pop("If-Modified-Since", None)
                current = target
                continue
            return FetchResult(
                url=url,
                final_url=current,
                status=status,
                headers=resp_headers,
                body=body,
                elapsed=time.monotonic() - started,
                permanent_redirect=permanent,
                redirected=hops > 0,
            )

    async def _request_any(
        self,
        url: str,
        host: str,
        addresses: list[str],
        headers: dict[str, str],
        send: tuple[str, bytes | None] = ("GET", None),
    ) -> tuple[int, dict[str, str], bytes]:
        """The request, to the first of the checked addresses that accepts a connection
        (the next address only when connecting failed: nothing was sent). When none does,
        the host is marked unresponsive and the failure names every address tried."""
        failures: list[tuple[str, FetchError]] = []
        for index, address in enumerate(addresses):
            last = index == len(addresses) - 1
            connect_timeout = self.limits.connect_timeout
            if not last:
                connect_timeout = min(connect_timeout, self.limits.fallback_connect_timeout)
            try:
                return await self._request(url, host, address, headers, connect_timeout, send)
            except _ConnectFailed as failed:
                failures.append((address, failed.error))
        self._mark_unresponsive(url)
        error = failures[-1][1]
        if len(failures) > 1:
            tried = "; ".join(f"{address}: {e}" for address, e in failures)
            error = type(error)(f"no address of {host} accepted a connection ({tried})", url=url)
        raise error

    async def _proxied(
        self, url: str, host: str, headers: dict[str, str], proxy: str
    ) -> tuple[int, dict[str, str], bytes]:
        """The request through a proxy, by name: the name's addresses were checked (the
        proxy resolves it again). A failure to reach the proxy marks nothing: it says
        nothing about the target host."""
        if self._aiohttp is None:  # config refuses proxies with http_transport: httpx
            raise FetchError("proxies need http_transport: aiohttp", url=url)
        parts = urlsplit(proxy)
        kwargs: dict[str, object] = {}
        if parts.scheme.lower() == "socks5":
            session = self._aiohttp.socks_session(proxy)
        else:
            session = self._aiohttp.session()
            port = f":{parts.port}" if parts.port else ""
            kwargs["proxy"] = f"{parts.scheme}://{parts.hostname}{port}"
            if parts.username is not None:
                user, password = unquote(parts.username), unquote(parts.password or "")
                token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
                credentials = {"Proxy-Authorization": f"Basic {token}"}
                if url.startswith("https:"):
                    kwargs["proxy_headers"] = credentials  # on the CONNECT request only
                else:  # the request itself goes to the proxy, which drops the header
                    headers = {**headers, **credentials}
        request_headers = _merged({"User-Agent": self.limits.user_agent}, headers)
        try:
            async with session.get(
                url,
                headers=request_headers,
                allow_redirects=False,
                timeout=self._aiohttp.timeout,
                **kwargs,  # type: ignore[arg-type]
            ) as response:
                return await self._aiohttp_answer(response, url)
        except aiohttp.ClientError as exc:
            raise self._translate_aiohttp(exc, url, host, proxied=True) from None
        except Exception as exc:
            if not type(exc).__module__.startswith(("python_socks", "aiohttp_socks")):
                raise
            # the SOCKS proxy could not be reached, timed out, or refused the target
            if isinstance(exc, TimeoutError):
                raise FetchTimeout(f"the proxy did not answer in time: {exc}", url=url) from None
            raise FetchError(f"through the proxy: {exc}", url=url) from None

    async def _aiohttp_answer(
        self, response: aiohttp.ClientResponse, url: str
    ) -> tuple[int, dict[str, str], bytes]:
        status = response.status
        limit = self.limits.max_body_bytes if response.method == "GET" else POST_ANSWER_BYTES
        body = await _read_body(response.content.iter_any(), status, limit, url)
        resp_headers: dict[str, str] = {}
        for key, value in response.headers.items():
            key = key.lower()  # repeated headers joined, as httpx does
            resp_headers[key] = f"{resp_headers[key]}, {value}" if key in resp_headers else value
        return status, resp_headers, body

    async def _request(
        self,
        url: str,
        host: str,
        address: str,
        headers: dict[str, str],
        connect_timeout: float,
        send: tuple[str, bytes | None] = ("GET", None),
    ) -> tuple[int, dict[str, str], bytes]:
        """One request (``send``: the method and body) to one checked address."""
        method, content = send
        parts = urlsplit(url)
        ip_host = f"[{address}]" if ":" in address else address
        netloc = ip_host if parts.port is None else f"{ip_host}:{parts.port}"
        target = urlunsplit(parts._replace(netloc=netloc))
        host_header = host if parts.port is None else f"{host}:{parts.port}"
        if ":" in host and parts.port is None:
            host_header = f"[{host}]"
        if self._aiohttp is not None:
            return await self._aiohttp_request(
                url, target, host, host_header, headers, connect_timeout, send
            )
        import httpx  # the httpx path (loaded already by ``_httpx_transport``)

        extensions: dict[str, object] = {"timeout": {**self._timeout, "connect": connect_timeout}}
        if parts.scheme == "https":
            extensions["sni_hostname"] = host
        request = httpx.Request(
            method,
            target,
            headers={**_merged(self._headers, headers), "Host": host_header},
            content=content,
            extensions=extensions,
        )
        limit = self.limits.max_body_bytes if send[1] is None else POST_ANSWER_BYTES
        assert self._transport is not None
        try:
            response = await self._transport.handle_async_request(request)
            try:
                status = response.status_code
                body = await _read_body(response.aiter_bytes(), status, limit, url)
                resp_headers = {k.lower(): v for k, v in response.headers.items()}
                return status, resp_headers, body
            finally:
                await response.aclose()
        except httpx.HTTPError as exc:
            error = self._translate(exc, url, host)
            if isinstance(exc, httpx.ConnectTimeout | httpx.ConnectError) and not _tls_failure(exc):
                raise _ConnectFailed(error) from None
            raise error from None

    async def _aiohttp_request(
        self,
        url: str,
        target: str,
        host: str,
        host_header: str,
        headers: dict[str, str],
        connect_timeout: float,
        send: tuple[str, bytes | None] = ("GET", None),
    ) -> tuple[int, dict[str, str], bytes]:
        """``_request`` on aiohttp's session: its default Accept-Encoding names the
        encodings it decodes, and it decodes as the body streams in, so the limit counts
        decoded bytes."""
        assert self._aiohttp is not None
        request_headers = {**_merged({"User-Agent": self.limits.user_agent}, headers)}
        request_headers["Host"] = host_header
        timeout = self._aiohttp.timeout
        if connect_timeout != timeout.sock_connect:
            timeout = aiohttp.ClientTimeout(
                total=timeout.total,
                sock_connect=connect_timeout,
                sock_read=timeout.sock_read,
                connect=timeout.connect,
            )
        try:
            async with self._aiohttp.session().request(
                send[0],
                target,
                data=send[1],
                headers=request_headers,
                allow_redirects=False,
                timeout=timeout,
                server_hostname=host if target.startswith("https:") else None,
            ) as response:
                return await self._aiohttp_answer(response, url)
        except aiohttp.ClientError as exc:
            error = self._translate_aiohttp(exc, url, host)
            if isinstance(
                exc, aiohttp.ConnectionTimeoutError | aiohttp.ClientConnectorError
            ) and not isinstance(exc, aiohttp.ClientSSLError):
                raise _ConnectFailed(error) from None
            raise error from None

    def _translate_aiohttp(
        self, exc: aiohttp.ClientError, url: str, host: str, *, proxied: bool = False
    ) -> FetchError:
        if isinstance(exc, aiohttp.ClientHttpProxyError):
            return FetchError(
                f"the proxy refused the connection to {host}: HTTP {exc.status} {exc.message}",
                url=url,
            )
        if isinstance(exc, aiohttp.ClientProxyConnectionError):
            return FetchError(f"cannot connect to the proxy: {exc.os_error}", url=url)
        if proxied and isinstance(exc, aiohttp.ClientConnectorError):
            return FetchError(f"connection through the proxy to {host} failed: {exc}", url=url)
        kind: str | None = None
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            kind = "connect"
        elif isinstance(exc, aiohttp.SocketTimeoutError):
            kind = "read"
        elif isinstance(exc, aiohttp.ServerTimeoutError):
            kind = "network"
        if kind is not None:
            return FetchTimeout(f"{kind} timeout talking to {host}", url=url)
        message = str(exc) or type(exc).__name__
        if isinstance(exc, aiohttp.ClientPayloadError) and "decode" in message.lower():
            return FetchError(f"cannot decode the response body: {message}", url=url)
        return FetchError(f"connection to {host} failed: {message}", url=url)

    def _translate(self, exc: httpx.HTTPError, url: str, host: str) -> FetchError:
        """One FetchError per failure, named for what really happened."""
        import httpx  # the httpx path (loaded already by ``_httpx_transport``)

        kind: str | None = None
        if isinstance(exc, httpx.TimeoutException):
            kind = {
                httpx.ConnectTimeout: "connect",
                httpx.ReadTimeout: "read",
                httpx.WriteTimeout: "write",
                httpx.PoolTimeout: "pool",
            }.get(type(exc), "network")
        if kind is not None:
            return FetchTimeout(f"{kind} timeout talking to {host}", url=url)
        if isinstance(exc, httpx.DecodingError):
            return FetchError(f"cannot decode the response body: {exc}", url=url)
        if isinstance(exc, httpx.RemoteProtocolError):
            return FetchError(f"protocol error from {host}: {exc}", url=url)
        message = str(exc) or type(exc).__name__
        return FetchError(f"connection to {host} failed: {message}", url=url)


class _ConnectFailed(Exception):
    """Connecting to one address failed before anything was sent: try the next one."""

    def __init__(self, error: FetchError) -> None:
        super().__init__(str(error))
        self.error = error


def _tls_failure(exc: BaseException) -> bool:
    """A TLS handshake failure (httpx reports it as a ConnectError): a certificate
    problem is the host's answer, not an address that cannot be reached."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False
