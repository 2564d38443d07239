"""The command line: thin commands over the other modules, one file per group.

Every command module is imported here (that registers its commands), so each keeps its
module-level imports light: what only one command needs (the export formats, the HTTP
server, the feed parsers, OPML, …) is imported inside that command, and ``aggregator
run`` loads none of it."""

from __future__ import annotations

import logging
import sys

from ..errors import AggregatorError
from . import (  # noqa: F401  (registers the commands)
    events,
    export,
    feeds,
    prune,
    run,
    serve,
    sources,
    stories,
)
from .common import app, err
from .root import StdoutClosed, silence_stdout, stdout_closed

__all__ = ["app", "main"]


def main() -> None:
    try:
        app()  # ends with SystemExit
    except SystemExit:
        _flush_stdout()
        raise
    except StdoutClosed:  # ``aggregator export | head -1``: the reader had enough
        silence_stdout()
        sys.exit(0)
    except AggregatorError as exc:
        err.print(f"error: {exc}", highlight=False, markup=False)
        sys.exit(2)
    except KeyboardInterrupt:
        logging.getLogger("aggregator").warning("interrupted")
        sys.exit(130)


def _flush_stdout() -> None:
    """What is still buffered goes out now: a reader that went away meanwhile shows here,
    not as a traceback from the interpreter's flush at exit."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        if not stdout_closed():
            raise
        silence_stdout()
