"""The SQL store: the only package that imports SQLAlchemy (see ``store.py`` for its
modules)."""

from .engine import redact_url
from .faults import DatabaseReadOnly, StorageFailure, is_permanent
from .feeds import FeedRow
from .store import Store, open_store

__all__ = [
    "DatabaseReadOnly",
    "FeedRow",
    "StorageFailure",
    "Store",
    "is_permanent",
    "open_store",
    "redact_url",
]
