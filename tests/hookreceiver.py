"""A webhook receiver on 127.0.0.1 for tests: records every POST (headers, body), answers
with a status the test sets (or never answers), and verifies Standard Webhooks signatures
independently of the code under test."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonschema

SCHEMA = json.loads(
    (Path(__file__).resolve().parent.parent / "docs" / "events.schema.json").read_text("utf-8")
)


def check_schema(document: dict[str, Any]) -> None:
    """``document`` against the published schema (docs/events.schema.json)."""
    jsonschema.Draft202012Validator(SCHEMA).validate(document)


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int  # what the receiver answered (0: it did not answer)

    @property
    def document(self) -> dict[str, Any]:
        """The body, checked against the published schema."""
        found: dict[str, Any] = json.loads(self.body)
        check_schema(found)
        return found


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The Standard Webhooks check, written from the spec: HMAC-SHA256 over
    "{webhook-id}.{webhook-timestamp}.{body}", keyed by the base64-decoded rest of a
    ``whsec_`` secret (else its UTF-8 bytes), base64, any of the space-separated ``v1,``
    signatures."""
    key = (
        base64.b64decode(secret[len("whsec_") :])
        if secret.startswith("whsec_")
        else secret.encode("utf-8")
    )
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(
        hmac.compare_digest(part.removeprefix("v1,"), expected)
        for part in headers.get("webhook-signature", "").split()
        if part.startswith("v1,")
    )


class Receiver:
    def __init__(self, host: str = "127.0.0.1", delay: float = 0.0) -> None:
        self.deliveries: list[Delivery] = []
        self.status = 204  # what to answer; 0: hang (never answer, until released)
        self._lock = threading.Lock()
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                if delay:
                    time.sleep(delay)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                status = receiver.status
                with receiver._lock:
                    receiver.deliveries.append(
                        Delivery(
                            self.path,
                            {k.lower(): v for k, v in self.headers.items()},
                            body,
                            status,
                        )
                    )
                if status == 0:
                    receiver.release.wait(60)
                    self.close_connection = True
                    return
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base = f"http://{host}:{self.port}"
        self.url = f"{self.base}/hook"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> Receiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def accepted(self) -> list[Delivery]:
        """The deliveries answered with a 2xx."""
        with self._lock:
            return [d for d in self.deliveries if 200 <= d.status < 300]

    def wait_for(self, count: int, timeout: float = 60.0) -> list[Delivery]:
        """At least ``count`` accepted deliveries (fails after ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.accepted()
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"{len(self.accepted())} deliveries accepted, wanted {count}")
