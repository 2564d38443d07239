"""Serve a generated farm on 127.0.0.1 with nginx, plus a latency proxy.

* ``http://127.0.0.1:PORT``: nginx (Debian package) serving the files as they are. nginx
  answers conditional requests for static files by itself: ``ETag`` (mtime-size) with
  ``If-None-Match`` and ``Last-Modified`` with ``If-Modified-Since`` → 304.
* ``http://127.0.0.1:PORT+1``: a small asyncio proxy in its own process that waits
  ``latency`` seconds (default 0.2) before forwarding each request to nginx over a kept-alive
  connection, and rewrites ``127.0.0.1:PORT`` to ``127.0.0.1:PORT+1`` inside bodies (same
  length), so the article pages a feed links to are also delayed. Validators pass through
  untouched, so 304s work through it too.

A farm generated with ``hosts=N`` is served on each of its addresses (127.0.1.1 …
127.0.1.N): one nginx ``listen`` line per address, same port, same files; the proxy listens
on each address at ``port + 1``, forwards to nginx on the same address and rewrites every
address's ``ADDRESS:PORT`` to ``ADDRESS:PORT+1``.

nginx runs with ``worker_processes`` 1 (2 with ``--nginx-workers 2``), no access log unless
asked for (``access_log=True`` writes ``<uri> <status>`` lines, for counting requests).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .generate import Farm

ROOT = Path(__file__).resolve().parents[2]

NGINX_CONF = """\
{user}worker_processes {workers};
daemon off;
master_process on;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    types {{
        text/html html;
        application/rss+xml rss;
        application/atom+xml atom;
        application/rdf+xml rdf;
        application/feed+json json;
        image/jpeg jpg;
    }}
    default_type application/octet-stream;
    charset utf-8;
    charset_types text/html application/rss+xml application/atom+xml application/rdf+xml;
    {access_log}
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    open_file_cache max=200000 inactive=120s;
    etag on;
    if_modified_since exact;
    client_body_temp_path {work}/tmp/body;
    proxy_temp_path {work}/tmp/proxy;
    fastcgi_temp_path {work}/tmp/fastcgi;
    uwsgi_temp_path {work}/tmp/uwsgi;
    scgi_temp_path {work}/tmp/scgi;
    server {{
{listen}
        server_name farm;
        root {root};
        location / {{ try_files $uri =404; }}
    }}
}}
"""


def nginx_binary() -> str:
    found = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if not found:
        raise SystemExit("nginx not found: apt-get install nginx-light (or nginx)")
    return found


def wait_port(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {host}:{port} after {timeout} s")


def port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


@dataclass
class Served:
    farm: Farm
    base: str
    latency_base: str | None
    access_log: Path | None

    def urls(self, *, latency: bool = False, limit: int | None = None) -> list[str]:
        return self.farm.urls(latency=latency, limit=limit)

    def requests(self) -> list[tuple[str, int]]:
        """(uri, status) of every request nginx logged so far (``access_log=True``)."""
        if self.access_log is None or not self.access_log.exists():
            return []
        out = []
        for line in self.access_log.read_text().splitlines():
            uri, _, status = line.rpartition(" ")
            if uri:
                out.append((uri, int(status)))
        return out


@contextlib.contextmanager
def serve(
    farm_dir: Path,
    *,
    latency: float | None = 0.2,
    nginx_workers: int = 1,
    access_log: bool = False,
    workdir: Path | None = None,
) -> Iterator[Served]:
    """Start nginx (and the latency proxy unless ``latency`` is None) for the farm."""
    farm = Farm.load(farm_dir)
    host, port = farm.host, farm.port
    for h in farm.hosts:
        for p in (port, port + 1) if latency is not None else (port,):
            if not port_free(h, p):
                raise SystemExit(
                    f"{h}:{p} is busy (another farm?); regenerate with --port to use others"
                )
    work = Path(tempfile.mkdtemp(prefix="farm-nginx-", dir=workdir))
    (work / "tmp").mkdir()
    log_path = work / "access.log" if access_log else None
    log_line = (
        f"log_format counts '$request_uri $status'; access_log {log_path} counts buffer=64k flush=1s;"
        if log_path
        else "access_log off;"
    )
    conf = work / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            user="user root root;\n" if os.geteuid() == 0 else "",
            workers=nginx_workers,
            work=work,
            access_log=log_line,
            listen="\n".join(f"        listen {h}:{port} backlog=4096;" for h in farm.hosts),
            root=(farm_dir / "site").resolve(),
        )
    )
    procs: list[subprocess.Popen[bytes]] = []
    try:
        nginx = subprocess.Popen(
            [nginx_binary(), "-p", str(work), "-c", str(conf), "-e", str(work / "error.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(nginx)
        for h in farm.hosts:
            wait_port(h, port)
        latency_base = None
        if latency is not None:
            env = dict(os.environ, PYTHONPATH=str(ROOT))
            proxy = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.farm",
                    "proxy",
                    "--host",
                    ",".join(farm.hosts),
                    "--port",
                    str(port + 1),
                    "--upstream-port",
                    str(port),
                    "--latency",
                    str(latency),
                ],
                env=env,
                cwd=str(ROOT),
            )
            procs.append(proxy)
            for h in farm.hosts:
                wait_port(h, port + 1)
            latency_base = f"http://{host}:{port + 1}"
        yield Served(farm, f"http://{host}:{port}", latency_base, log_path)
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        if log_path and log_path.exists():
            # keep the log for the caller's last look; the folder goes away with it
            pass
        shutil.rmtree(work, ignore_errors=True)


# ---- the latency proxy ---------------------------------------------------------------------


async def _read_head(reader: asyncio.StreamReader) -> bytes | None:
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        return None


def _header(head: bytes, name: bytes) -> bytes | None:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip()
    return None


async def _handle(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    host: str,
    upstream_port: int,
    latency: float,
    rewrite: re.Pattern[bytes],
    new: bytes,
) -> None:
    up_reader: asyncio.StreamReader | None = None
    up_writer: asyncio.StreamWriter | None = None
    try:
        while True:
            head = await _read_head(reader)
            if head is None:
                return
            method = head.split(b" ", 1)[0].upper()
            length = int(_header(head, b"content-length") or 0)
            body = await reader.readexactly(length) if length else b""
            await asyncio.sleep(latency)
            if up_writer is None or up_writer.is_closing():
                up_reader, up_writer = await asyncio.open_connection(host, upstream_port)
            assert up_reader is not None
            up_writer.write(head + body)
            await up_writer.drain()
            rhead = await _read_head(up_reader)
            if rhead is None:
                return
            status = int(rhead.split(b" ", 2)[1])
            no_body = method == b"HEAD" or status in (204, 304) or status < 200
            size = 0 if no_body else int(_header(rhead, b"content-length") or 0)
            payload = await up_reader.readexactly(size) if size else b""
            writer.write(rhead + rewrite.sub(new, payload))
            await writer.drain()
            if (_header(head, b"connection") or b"").lower() == b"close":
                return
    except (ConnectionError, asyncio.IncompleteReadError):
        return
    finally:
        if up_writer is not None:
            up_writer.close()
        writer.close()


async def run_proxy(host: str, port: int, upstream_port: int, latency: float) -> None:
    """Listen on ``port`` of each address in ``host`` (comma-separated), forward to
    ``upstream_port`` on the same address."""
    hosts = host.split(",")
    names = b"|".join(re.escape(h.encode()) for h in hosts)
    rewrite = re.compile(rb"(" + names + rb"):" + str(upstream_port).encode() + rb"(?!\d)")
    new = rb"\1:" + str(port).encode()
    servers = [
        await asyncio.start_server(
            lambda r, w, h=h: _handle(r, w, h, upstream_port, latency, rewrite, new),
            h,
            port,
            backlog=4096,
            limit=1 << 20,
        )
        for h in hosts
    ]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for server in servers:
        server.close()
