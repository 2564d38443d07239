"""The SQL store: the only package that imports SQLAlchemy."""

from .store import Store, open_store

__all__ = ["Store", "open_store"]
