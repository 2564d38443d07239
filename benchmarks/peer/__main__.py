"""``python -m benchmarks.peer``: see :mod:`benchmarks.peer.run`."""

from .run import main

main()
