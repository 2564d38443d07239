"""https through the address guard: the request goes to the checked IP address while TLS
still verifies the certificate against the host name (SNI), on both transports."""

from __future__ import annotations

import asyncio
import http.server
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from aggregator.errors import FetchError
from aggregator.fetch import Fetcher, FetchLimits
from aggregator.records import FetchResult


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    if shutil.which("openssl") is None:
        pytest.fail("the openssl command is needed to make the test certificates")
    folder = tmp_path_factory.mktemp("tls")
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=aggregator test CA",
        cwd=folder,
    )
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "srv.key",
        "-out",
        "srv.csr",
        "-subj",
        "/CN=localhost",
        cwd=folder,
    )
    (folder / "ext.cnf").write_text("subjectAltName=DNS:localhost\n")
    openssl(
        "x509",
        "-req",
        "-in",
        "srv.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "srv.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        cwd=folder,
    )

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = f"<rss>{self.headers.get('Host')}</rss>".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "srv.pem", folder / "srv.key")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], folder / "ca.pem"
    server.shutdown()


def fetch(url: str, transport: str, ca: Path | None) -> FetchResult:
    limits = FetchLimits(
        user_agent="t",
        allow_private_networks=("127.0.0.0/8", "::1/128"),
        transport=transport,
        ca_bundle=str(ca) if ca else None,
    )

    async def go() -> FetchResult:
        async with Fetcher(limits) as fetcher:
            return await fetcher.fetch(url)

    return asyncio.run(go())


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_https_verifies_the_name_while_connecting_to_the_checked_address(
    tls_server: tuple[int, Path], transport: str
) -> None:
    port, ca = tls_server
    result = fetch(f"https://localhost:{port}/feed", transport, ca)
    assert result.status == 200 and result.body == f"<rss>localhost:{port}</rss>".encode()
    # the certificate names localhost, not the address: verification must fail
    with pytest.raises(FetchError):
        fetch(f"https://127.0.0.1:{port}/feed", transport, ca)
    # an unknown CA is refused
    with pytest.raises(FetchError):
        fetch(f"https://localhost:{port}/feed", transport, None)
