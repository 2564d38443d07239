"""Logging set-up: every log line goes to **standard error** (standard output carries
only a command's own output: tables, exports, feeds.yaml entries), as one JSON object
per line when standard error is not a terminal, human-readable lines (rich) when it is.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
# fields other libraries attach that say nothing new: uvicorn's ``color_message`` is its
# ``msg`` with terminal colour codes
_DROPPED = {"color_message"}
# APScheduler's "Execution of job … skipped: maximum number of running instances reached":
# a tick that is still running when the next is due; the daemon says that itself, in its
# own words (scheduler.Daemon, event "tick_still_running")
_SKIPPED_RUN = "maximum number of running instances reached"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in _DROPPED and not key.startswith("_"):
                data[key] = value
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str, ensure_ascii=False)


def _not_a_skipped_run(record: logging.LogRecord) -> bool:
    return _SKIPPED_RUN not in str(record.msg)


def setup_logging(level: str = "INFO", *, json_lines: bool | None = None) -> None:
    if json_lines is None:
        json_lines = not sys.stderr.isatty()
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    handler: logging.Handler
    if json_lines:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(JsonFormatter())
        handler = stream
    else:
        from rich.console import Console
        from rich.logging import RichHandler

        handler = RichHandler(
            console=Console(stderr=True), show_path=False, rich_tracebacks=True, markup=False
        )
        handler.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in (
        "httpx",
        "httpcore",
        "apscheduler",
        "trafilatura",
        "htmldate",
        "courlan",
        "charset_normalizer",
        "alembic",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    scheduler_log = logging.getLogger("apscheduler.scheduler")
    if _not_a_skipped_run not in scheduler_log.filters:
        scheduler_log.addFilter(_not_a_skipped_run)
