"""The container's HEALTHCHECK: ask the daemon's ``/healthz`` and exit 0 only on HTTP 200.

    python /app/healthcheck.py [URL]

Without URL the address comes from ``settings.http`` of the config the daemon reads
(``$AGGREGATOR_CONFIG``, else ``config/feeds.yaml`` in the working directory, as
``aggregator run`` finds it); a wildcard host (``0.0.0.0``, ``::``) is asked on loopback.
When ``settings.http`` is off the daemon serves nothing to ask: that is said and the exit
status is 0, so the container's health is then only that its process runs.

Exit status: 0 healthy, 1 unhealthy. One line says why (``docker inspect`` shows it).
Standard library and the installed ``aggregator`` package only: the image has no curl.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request

TIMEOUT = 8.0  # seconds; the Dockerfile's HEALTHCHECK --timeout is 10 s
MAX_BODY = 4096


def url_from_config() -> str | None:
    from aggregator.config import load_config

    http = load_config().settings.http
    if http is None:
        return None
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(http.host, http.host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{http.port}/healthz"


def reason(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace").strip()[:200]
    if isinstance(data, dict):
        return str(data.get("reason") or data.get("status") or data)
    return str(data)


def check(url: str) -> tuple[bool, str]:
    # No proxy: an http_proxy variable in the container must not carry a loopback request away.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=TIMEOUT) as response:
            body = response.read(MAX_BODY)
            return response.status == 200, f"HTTP {response.status} from {url}: {reason(body)}"
    except urllib.error.HTTPError as exc:
        return False, f"HTTP {exc.code} from {url}: {reason(exc.read(MAX_BODY))}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        why = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        return False, f"cannot reach {url}: {why}"


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        url: str | None = argv[1]
    else:
        from aggregator.errors import ConfigError

        try:
            url = url_from_config()
        except ConfigError as exc:
            print(f"unhealthy: {exc}")
            return 1
    if url is None:
        print("no health endpoint: settings.http is off (the process runs; nothing else to ask)")
        return 0
    healthy, message = check(url)
    print(("healthy: " if healthy else "unhealthy: ") + message)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
