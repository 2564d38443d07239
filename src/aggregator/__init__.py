"""aggregator: a feed ingester and aggregator daemon."""

__version__ = "0.1.0"
