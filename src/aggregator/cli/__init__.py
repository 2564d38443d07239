"""The command line: thin commands over the other modules, one file per group.

Every command module is imported here (that registers its commands), so each keeps its
module-level imports light: what only one command needs (the export formats, the HTTP
server, the feed parsers, OPML, …) is imported inside that command, and ``aggregator
run`` loads none of it."""

from __future__ import annotations

import logging
import sys

from ..errors import AggregatorError
from . import export, feeds, run, serve, sources, stories  # noqa: F401  (registers the commands)
from .common import app, err

__all__ = ["app", "main"]


def main() -> None:
    try:
        app()
    except AggregatorError as exc:
        err.print(f"error: {exc}", highlight=False, markup=False)
        sys.exit(2)
    except KeyboardInterrupt:
        logging.getLogger("aggregator").warning("interrupted")
        sys.exit(130)
