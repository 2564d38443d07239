"""``python -m aggregator`` and the ``aggregator`` console script.

This module stays light on purpose: a process-pool worker started by multiprocessing
(forkserver, spawn) first re-imports the main script of the parent, and the console
script imports this module. Importing it must not load the command line and everything
behind it (SQLAlchemy, httpx, …) into every worker.
"""


def main() -> None:
    from .cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
