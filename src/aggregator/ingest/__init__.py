"""The save path: a poll, once decided by the pipeline, written all or nothing.

- ``poll``: one poll on one connection: dedup decisions (``dedup``) and the store's
  statements (``store.items``, ``store.index``, ``store.storyrows``, ``store.feedrows``);
- ``candidates``: the candidates of a poll's entries, read once for the whole poll;
- the savers, one per strategy, each with ``save(poll) -> SaveResult`` (the pipeline's
  ``SavePort``) and ``close()``: ``direct`` (a transaction per poll: PostgreSQL),
  ``batching`` (SQLite: polls in groups, one transaction, a savepoint each, by a writer
  thread; ``groupwrite``), ``process`` (the same in a process of its own, over a pipe of
  typed messages);
- ``rebuild``: ``aggregator stories rebuild``.

``app`` chooses the saver. Nothing here imports SQLAlchemy but for type hints: the SQL is
the store's.
"""
