"""trafilatura's single-core rate with default settings on a sample of farm pages.

    python benchmarks/peer/trafilatura_rate.py PAGES_LIST

One process, one thread: reads every page (paths, one a line) into memory first, extracts two
pages to warm up (imports, lazy tables), then times ``trafilatura.extract(html)`` over the
whole sample. Prints one JSON line: pages, seconds, pages per second, CPU seconds.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import trafilatura


def main() -> None:
    paths = [Path(p) for p in Path(sys.argv[1]).read_text().split("\n") if p]
    pages = [p.read_text(encoding="utf-8") for p in paths]
    for html in pages[:2]:
        trafilatura.extract(html)
    empty = 0
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    for html in pages:
        if not trafilatura.extract(html):
            empty += 1
    seconds = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    print(
        json.dumps(
            {
                "pages": len(pages),
                "empty": empty,
                "seconds": round(seconds, 3),
                "cpu_s": round(cpu, 3),
                "pages_per_s": round(len(pages) / seconds, 2),
                "pages_per_cpu_s": round(len(pages) / cpu, 2),
                "trafilatura": trafilatura.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
