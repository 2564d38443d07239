"""Small real proxies on 127.0.0.1 for tests: HTTP (forward and CONNECT, optionally over
TLS) and SOCKS5, each on its own asyncio loop in a thread, counting what it is asked.

Each proxy resolves target names through its own ``hosts`` map first (``feed.test`` →
127.0.0.1), so a test can use a name only the proxy can reach: a request that arrives
proves that it went through the proxy, by name.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import socket
import ssl
import struct
import threading
from dataclasses import dataclass, field


@dataclass
class Asked:
    kind: str  # "forward", "connect" or "socks5"
    target: str  # host:port as the client named it
    headers: dict[str, str] = field(default_factory=dict)


class _Proxy:
    def __init__(
        self,
        hosts: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.hosts = hosts or {}
        self.auth = auth
        self.tls = tls
        self.asked: list[Asked] = []
        self.refused = 0  # requests refused for want of credentials
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0

    def start(self) -> _Proxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        )
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()
        tasks = asyncio.all_tasks(self._loop)
        for task in tasks:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self._loop.run_until_complete(server.wait_closed())
        self._loop.close()

    def resolve(self, host: str) -> str:
        return self.hosts.get(host, host)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self.handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await writer.wait_closed()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):
            writer.close()


async def _both_ways(
    client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
) -> None:
    await asyncio.gather(_pipe(client[0], upstream[1]), _pipe(upstream[0], client[1]))


class HttpProxy(_Proxy):
    """An HTTP proxy: absolute-URI requests are forwarded (one per connection), CONNECT
    opens a tunnel. With ``auth`` it answers 407 without the right Proxy-Authorization;
    with ``tls`` clients talk TLS to it (an https:// proxy)."""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        if self.auth is not None:
            token = base64.b64encode(":".join(self.auth).encode()).decode()
            if headers.get("proxy-authorization") != f"Basic {token}":
                self.refused += 1
                writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\n")
                writer.write(b'Proxy-Authenticate: Basic realm="t"\r\nContent-Length: 0\r\n\r\n')
                await writer.drain()
                return
        if method == "CONNECT":
            self.asked.append(Asked("connect", target, headers))
            host, port = target.rsplit(":", 1)
            upstream = await asyncio.open_connection(self.resolve(host), int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await _both_ways((reader, writer), upstream)
            return
        self.asked.append(Asked("forward", target, headers))
        scheme_less = target.split("://", 1)[1]
        authority, _, path = scheme_less.partition("/")
        host, _, port = authority.rpartition(":")
        upstream = await asyncio.open_connection(self.resolve(host), int(port or 80))
        kept = [
            line
            for line in lines[1:]
            if line
            and line.split(":", 1)[0].strip().lower()
            not in ("proxy-authorization", "proxy-connection", "connection")
        ]
        request = [f"{method} /{path} {version}", *kept, "Connection: close", "", ""]
        upstream[1].write("\r\n".join(request).encode("latin-1"))
        await upstream[1].drain()
        await _pipe(upstream[0], writer)
        upstream[1].close()


class Socks5Proxy(_Proxy):
    """A SOCKS5 proxy (CONNECT only); with ``auth``, username/password (RFC 1929)."""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        version, count = await reader.readexactly(2)
        assert version == 5
        methods = await reader.readexactly(count)
        wanted = 2 if self.auth is not None else 0
        if wanted not in methods:
            self.refused += 1
            writer.write(b"\x05\xff")
            await writer.drain()
            return
        writer.write(bytes([5, wanted]))
        await writer.drain()
        if self.auth is not None:
            _, ulen = await reader.readexactly(2)
            user = (await reader.readexactly(ulen)).decode()
            (plen,) = await reader.readexactly(1)
            password = (await reader.readexactly(plen)).decode()
            if (user, password) != self.auth:
                self.refused += 1
                writer.write(b"\x01\x01")
                await writer.drain()
                return
            writer.write(b"\x01\x00")
            await writer.drain()
        _, _command, _, kind = await reader.readexactly(4)
        if kind == 1:
            host = str(ipaddress.IPv4Address(await reader.readexactly(4)))
        elif kind == 4:
            host = str(ipaddress.IPv6Address(await reader.readexactly(16)))
        else:
            (length,) = await reader.readexactly(1)
            host = (await reader.readexactly(length)).decode()
        (port,) = struct.unpack("!H", await reader.readexactly(2))
        self.asked.append(Asked("socks5", f"{host}:{port}"))
        try:
            upstream = await asyncio.open_connection(self.resolve(host), port)
        except OSError:
            writer.write(b"\x05\x05\x00\x01" + socket.inet_aton("0.0.0.0") + b"\x00\x00")
            await writer.drain()
            return
        writer.write(b"\x05\x00\x00\x01" + socket.inet_aton("0.0.0.0") + b"\x00\x00")
        await writer.drain()
        await _both_ways((reader, writer), upstream)
