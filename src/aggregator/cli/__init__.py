"""The command line: thin commands over the other modules, one file per group."""

from __future__ import annotations

import logging
import sys

from ..errors import AggregatorError
from . import export, feeds, run, serve, sources, stories  # noqa: F401  (registers the commands)  # noqa: F401  (registers export and serve)
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
