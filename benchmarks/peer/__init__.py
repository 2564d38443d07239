"""Issue 8's benchmark: the aggregator beside the ``reader`` library (3.26) on one farm.

    python -m benchmarks.peer [--feeds 2000] [--pipeline-feeds 300] [--corpora ../shared/corpora]
    python -m benchmarks.peer --quick

See :mod:`benchmarks.peer.run` for what is measured, and docs/performance.md for results.
"""
