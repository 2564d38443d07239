"""The jobs the main process submits to the process pool: light entry points.

A function crosses to a pool worker pickled by reference (module and name), so the
submitting process must import the function's module. These entry points live in a
module that imports nothing heavy; each imports :mod:`aggregator.poolwork` (feedparser,
trafilatura, lxml, bs4, …) inside the call, which only ever runs in a worker. The main
process thus never loads the parsing and extraction libraries.
"""

from __future__ import annotations

import os
import select
import threading
import time
from collections.abc import Sequence

from .records import ArticlePage, HtmlSelectors, Prepared, TextFingerprint


def warm(owner: int | None = None) -> None:
    """Pool initializer: exit with the process ``owner`` (the one that made the pool), and
    import the heavy modules once per worker, not on the first job."""
    if owner is not None:
        follow(owner)
    from . import poolwork

    poolwork.warm()


def follow(owner: int) -> None:
    """Exit this process when ``owner`` is gone, however it ended. A pool worker of a
    SIGKILLed daemon (the OOM killer, ``kill -9``) otherwise waits on its job queue
    forever: it holds the queue's other end itself, and the forkserver's liveness pipe,
    so the forkserver stays too, and each restart left another set behind."""
    try:
        handle: int | None = os.pidfd_open(owner)  # readable once the process has ended
    except ProcessLookupError:
        os._exit(0)
    except (AttributeError, OSError):  # no pidfd (not Linux, or before 5.3): poll
        handle = None

    def watch() -> None:
        if handle is not None:
            select.select([handle], [], [])
        else:
            while process_exists(owner):
                time.sleep(2.0)
        os._exit(0)

    threading.Thread(target=watch, name="owner-watch", daemon=True).start()


def process_exists(pid: int) -> bool:
    """Is there a process ``pid`` on this machine (ours or not)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def prepare_document(
    body: bytes,
    headers: dict[str, str],
    base_url: str,
    limit: int,
    source_type: str = "feed",
    selectors: HtmlSelectors | None = None,
) -> Prepared:
    """Parse a fetched document and sanitize its entries (see ``poolwork.prepare_document``)."""
    from . import poolwork

    return poolwork.prepare_document(body, headers, base_url, limit, source_type, selectors)


def extract_pages(pages: Sequence[tuple[bytes, str]]) -> list[ArticlePage | str]:
    """Extract several article pages (body, URL) in one job; an error comes back as its
    message. One job per few pages: the hand-off of each job to a worker costs the main
    process more than a page's extraction does, and left the workers waiting."""
    from . import poolwork

    return [poolwork.extract_page(body, url) for body, url in pages]


def fingerprints(texts: Sequence[str | None]) -> list[TextFingerprint | None]:
    """Text fingerprints for story dedup, one per text."""
    from . import poolwork

    return poolwork.fingerprints(texts)
