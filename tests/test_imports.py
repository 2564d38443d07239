"""What each process imports: the main process and the pool workers stay light.

The command line, the scheduler and the pipeline must not load the parsing, extraction,
export or HTTP-server libraries (they run in the pool, or only for their own commands);
pool workers must not load the command line, the database or the HTTP client. Each check
runs in a fresh interpreter, so what other tests imported does not count.
"""

from __future__ import annotations

import json
import subprocess
import sys

# work done in the pool (parse, listing, discovery, extract, dedup URLs)
POOL_ONLY = {
    "feedparser",
    "trafilatura",
    "lxml",
    "lxml_html_clean",
    "bs4",
    "soupsieve",
    "dateparser",
    "courlan",
    "justext",
    "htmldate",
    "nh3",
}
# loaded by the one command (or daemon feature) that needs them
ON_DEMAND = {
    "feedgen",  # exports
    "starlette",  # the HTTP server
    "uvicorn",
    "prometheus_client",  # the daemon's metrics
    "apscheduler",  # the daemon's scheduler
    "alembic",  # migrations
    "listparser",  # OPML import
    "ruamel",  # feeds.yaml editing
}
# the main process only: the command line, the store, the fetcher, the config
MAIN_ONLY = {"typer", "rich", "sqlalchemy", "httpx", "aiohttp", "pydantic"}


def loaded(code: str, modules: str = "sys.modules") -> set[str]:
    """Top-level packages among the ``modules`` names after running ``code`` in a fresh
    interpreter."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted({modules})))"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    names: list[str] = json.loads(out.splitlines()[-1])
    return {name.split(".")[0] for name in names}


def test_the_command_line_loads_no_pool_or_on_demand_library() -> None:
    # importing the CLI registers every command; `aggregator run --once` needs no more
    mods = loaded("import aggregator.cli, aggregator.scheduler, aggregator.pipeline")
    assert sorted(mods & (POOL_ONLY | ON_DEMAND)) == []
    # numpy (dedup's fingerprints) loads with the first new entry: not for a run of 304s
    assert "numpy" not in mods


def test_the_entry_module_is_light() -> None:
    # multiprocessing re-imports the console script's module in every pool worker
    mods = loaded("import aggregator.__main__")
    assert sorted(mods & (POOL_ONLY | ON_DEMAND | MAIN_ONLY | {"numpy", "yaml"})) == []


def test_pool_workers_load_the_parsers_but_not_the_main_process_libraries() -> None:
    code = (
        "from aggregator.app import make_pool\n"
        "pool = make_pool(1)\n"
        "worker = pool.submit(eval, 'list(__import__(\"sys\").modules)').result()\n"
        "pool.shutdown()"
    )
    worker = loaded(code, modules="worker")
    assert {"feedparser", "trafilatura", "courlan"} <= worker  # the initializer warmed it up
    assert sorted(worker & (MAIN_ONLY | ON_DEMAND)) == []
