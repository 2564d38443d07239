"""A small WebSub hub for tests (W3C Recommendation, 2018), on 127.0.0.1, port 0.

It speaks the hub's side of the spec: a subscription request (5.1) is a form POST to
``/``, answered 202 Accepted; then, in a thread of its own, the hub verifies the intent
(5.3) with a GET to the callback (``hub.mode``, ``hub.topic``, ``hub.challenge``,
``hub.lease_seconds``) and takes the subscription (or ends it) only if the callback
answers 2xx with the challenge as its body. ``publish`` distributes content (7): a POST
of the body to every verified callback of the topic, with the ``Link`` headers and an
``X-Hub-Signature`` (8) made with the subscription's secret. ``verify=False`` makes a
hub that accepts requests and never verifies them.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import httpx


@dataclass
class Subscription:
    topic: str
    callback: str
    secret: str | None
    lease: int
    verified_at: float


@dataclass
class Verification:
    mode: str
    topic: str
    callback: str
    status: int
    confirmed: bool  # answered 2xx with the challenge


@dataclass
class Hub:
    verify: bool = True
    lease: int | None = None  # seconds granted; None: what the subscriber asked for
    answer: int = 202  # status of the answer to subscription requests
    requests: list[dict[str, str]] = field(default_factory=list)
    verifications: list[Verification] = field(default_factory=list)
    subscriptions: dict[tuple[str, str], Subscription] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._lock = threading.Condition()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode("utf-8")
                form = {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}
                problem = hub._check(form, self.headers.get("Content-Type", ""))
                status = 400 if problem else hub.answer
                body = (problem or "").encode()
                with hub._lock:  # recorded before the answer: the caller may look at once
                    hub.requests.append(form)
                    hub._lock.notify_all()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                if not problem and 200 <= status < 300 and hub.verify:
                    threading.Thread(target=hub._verify, args=(form,), daemon=True).start()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # ---- subscription requests (5.1) and verification of intent (5.3) ------------------
    @staticmethod
    def _check(form: dict[str, str], content_type: str) -> str | None:
        if not content_type.startswith("application/x-www-form-urlencoded"):
            return "the request must be a form (application/x-www-form-urlencoded)"
        if form.get("hub.mode") not in ("subscribe", "unsubscribe"):
            return "hub.mode must be subscribe or unsubscribe"
        if not form.get("hub.topic") or not form.get("hub.callback"):
            return "hub.topic and hub.callback are required"
        if len(form.get("hub.secret", "").encode()) >= 200:
            return "hub.secret must be less than 200 bytes"
        return None

    def _verify(self, form: dict[str, str]) -> None:
        mode, topic, callback = form["hub.mode"], form["hub.topic"], form["hub.callback"]
        challenge = secrets.token_urlsafe(16)
        params = {"hub.mode": mode, "hub.topic": topic, "hub.challenge": challenge}
        lease = (
            self.lease if self.lease is not None else int(form.get("hub.lease_seconds") or 864000)
        )
        if mode == "subscribe":
            params["hub.lease_seconds"] = str(lease)
        try:
            response = httpx.get(callback, params=params, timeout=30)
            status, confirmed = (
                response.status_code,
                (200 <= response.status_code < 300 and response.text == challenge),
            )
        except httpx.HTTPError:
            status, confirmed = 0, False
        with self._lock:
            if confirmed and mode == "subscribe":
                self.subscriptions[(topic, callback)] = Subscription(
                    topic, callback, form.get("hub.secret"), lease, time.monotonic()
                )
            elif confirmed:
                self.subscriptions.pop((topic, callback), None)
            self.verifications.append(Verification(mode, topic, callback, status, confirmed))
            self._lock.notify_all()

    def verify_now(self, callback: str, **params: str) -> httpx.Response:
        """A verification GET of our own making (wrong topic, mode, no request…)."""
        return httpx.get(callback, params=params, timeout=30)

    def deny(self, topic: str, callback: str, reason: str) -> httpx.Response:
        """5.2: the hub tells the subscriber it refused (or ended) the subscription."""
        params = {"hub.mode": "denied", "hub.topic": topic, "hub.reason": reason}
        return httpx.get(callback, params=params, timeout=30)

    # ---- content distribution (7) with authentication (8) --------------------------------
    def publish(
        self,
        topic: str,
        body: bytes,
        *,
        content_type: str = "application/atom+xml",
        method: str = "sha256",
        signature: str | None = None,
        signed: bool = True,
    ) -> list[httpx.Response]:
        """POST ``body`` to every verified callback of ``topic``; ``signature``: send
        this X-Hub-Signature instead of the right one; ``signed=False``: none."""
        with self._lock:
            targets = [s for (t, _), s in self.subscriptions.items() if t == topic]
        answers = []
        for sub in targets:
            headers = {
                "Content-Type": content_type,
                "Link": f'<{self.url}>; rel="hub", <{topic}>; rel="self"',
            }
            if signed and sub.secret is not None:
                digest = hmac.new(sub.secret.encode(), body, getattr(hashlib, method))
                headers["X-Hub-Signature"] = signature or f"{method}={digest.hexdigest()}"
            answers.append(httpx.post(sub.callback, content=body, headers=headers, timeout=60))
        return answers

    # ---- waiting ----------------------------------------------------------------------------
    def wait(self, condition: Callable[[Hub], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        with self._lock:
            while not condition(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("timed out waiting for the hub")
                self._lock.wait(left)

    def confirmed(self, mode: str) -> list[Verification]:
        with self._lock:
            return [v for v in self.verifications if v.mode == mode and v.confirmed]
