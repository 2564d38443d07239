"""``python -m benchmarks.ceiling``: see :mod:`benchmarks.ceiling.run`."""

from .run import main

main()
