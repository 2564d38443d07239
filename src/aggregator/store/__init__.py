"""The SQL store: the only package that imports SQLAlchemy."""

from .engine import redact_url
from .faults import DatabaseReadOnly, StorageFailure, is_permanent
from .store import Store, open_store

__all__ = [
    "DatabaseReadOnly",
    "StorageFailure",
    "Store",
    "is_permanent",
    "open_store",
    "redact_url",
]
