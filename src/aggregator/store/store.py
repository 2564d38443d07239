"""``Store``: one database, its SQL split by aggregate (as reader's storage mixins are).

| mixin | module | owns |
| --- | --- | --- |
| ``Database`` | ``database`` | engines, transactions, the write turn, WAL upkeep |
| ``MigrateMixin`` | ``migrate`` | Alembic migrations |
| ``FeedsMixin`` | ``feeds`` | the feeds table, feed states, the due rule |
| ``LeasesMixin`` | ``leases`` | claims and leases of several workers |
| ``ItemsMixin`` | ``items`` | stored entries (the save path's statements too) |
| ``IndexMixin`` | ``index`` | the dedup index (bands, anchor counts), its pruning |
| ``SearchMixin`` | ``search`` | full-text indexing in batches (SQLite), its lag |
| ``ReportsMixin`` | ``reports`` | counts and story reports |
| ``RetentionMixin`` | ``retention`` | retention's SQL, the space SQLite gives back |

Rows never leave the store: it returns records. It holds no thread and no policy: saving
a poll (dedup decisions, group commits, the writer process) is ``ingest``'s, which runs
these modules' statements on its connections.
"""

from __future__ import annotations

from sqlalchemy.exc import OperationalError

from ..errors import StoreError
from . import faults
from . import websub as websub_sql
from .engine import WAL_LIMIT, open_engines, redact_url
from .feeds import FeedsMixin
from .index import IndexMixin
from .items import ItemsMixin
from .leases import LeasesMixin
from .migrate import MigrateMixin
from .outbox import Outbox
from .reports import ReportsMixin
from .retention import RetentionMixin
from .search import SearchMixin


class Store(
    FeedsMixin,
    LeasesMixin,
    ItemsMixin,
    IndexMixin,
    SearchMixin,
    ReportsMixin,
    RetentionMixin,
    MigrateMixin,
):
    """A handle on one database; thread-safe (one engine, short transactions)."""

    @property
    def websub(self) -> websub_sql.PushStore:
        """WebSub subscriptions (``store/websub.py``), in this store's transactions."""
        return websub_sql.PushStore(self.locked_tx, self.read, self.dialect)

    def outbox(self) -> Outbox:
        """Webhook subscriptions, deliveries and the ``events`` commands
        (``store/outbox.py``), in this store's transactions."""
        return Outbox(self.locked_tx, self.read, self.dialect)


def open_store(
    url: str, *, pool_size: int = 5, read_only: bool = False, wal_limit: int = WAL_LIMIT
) -> Store:
    """Open (not migrate) the database at ``url`` (see ``engine``): for writing, SQLite
    folders are created and a read-only file is refused (``DatabaseReadOnly``); with
    ``read_only`` the database must exist and is opened read-only. ``wal_limit``: the
    size at which an SQLite file's write-ahead log is checkpointed (``checkpoint``)."""
    opened = open_engines(url, pool_size=pool_size, read_only=read_only)
    store = Store(
        opened.engine,
        opened.write,
        read_only=opened.read_only,
        wal_limit=wal_limit,
        gate=opened.gate,
    )
    try:
        store.ping()
    except StoreError:
        store.dispose()
        raise
    except OperationalError as exc:
        store.dispose()
        raise faults.store_error(exc, f"cannot open database {redact_url(url)!r}") from None
    return store
