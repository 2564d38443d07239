"""The SQL store: the only package that imports SQLAlchemy."""

from .store import Store, open_store, redact_url

__all__ = ["Store", "open_store", "redact_url"]
