"""The root command: how the command line meets the shell.

- **A closed standard output** (``aggregator export … | head -1``): the reader went away,
  which is not an error. A ``BrokenPipeError`` raised while standard output is a pipe with
  no reader becomes :class:`StdoutClosed` here (Typer would otherwise turn it into exit
  code 1), and :func:`aggregator.cli.main` ends quietly with 0, standard output pointed at
  ``/dev/null`` (as the Python documentation on SIGPIPE recommends). The commands print
  through :class:`PipeConsole`, which hands a closed pipe on to that too.
- **Help without Typer's type labels**: Typer 0.2x prints each option's Python type
  (``--once <bool>``, ``--feed <list[str]>``, ``URL <str>``). Every parameter of every
  command gets a plain metavar instead (``--feed NAME``, ``URL``; nothing for a flag),
  its own where it declares one, else its name in capitals.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import sys
from collections.abc import Iterator
from typing import Any

import typer
from rich.console import Console
from typer.core import TyperGroup


class StdoutClosed(Exception):
    """Standard output's reader went away."""


def stdout_closed() -> bool:
    """Whether standard output is a pipe or socket whose reading end is closed (the
    writing end then polls as an error; a file or a terminal never does)."""
    try:
        fd = sys.stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        events = poller.poll(0)
    except (AttributeError, ValueError, OSError):
        return False
    return any(event & (select.POLLERR | select.POLLHUP) for _fd, event in events)


def silence_stdout() -> None:
    """Point standard output at /dev/null: what is still buffered, and the interpreter's
    flush at exit, go nowhere instead of raising again."""
    with contextlib.suppress(AttributeError, ValueError, OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


@contextlib.contextmanager
def closed_stdout_ends_quietly() -> Iterator[None]:
    try:
        yield
    except BrokenPipeError as exc:
        if not stdout_closed():
            raise  # some other pipe: a real error
        raise StdoutClosed() from exc


class PipeConsole(Console):
    """A rich console that leaves a closed pipe to the root command (rich's own answer
    is exit code 1)."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))


class RootGroup(TyperGroup):
    """The ``aggregator`` group; see the module's docstring."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        plain_metavars(self)

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        with closed_stdout_ends_quietly():  # ``--help`` and ``--version`` print here
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: Any) -> Any:
        with closed_stdout_ends_quietly():  # every subcommand runs inside
            return super().invoke(ctx)


def plain_metavars(command: Any) -> None:
    """Give every parameter of ``command`` and its subcommands a plain metavar."""
    params = list(command.params)
    with contextlib.suppress(Exception):  # the help option is made per context
        help_option = command.get_help_option(typer.Context(command))
        if help_option is not None:
            params.append(help_option)
    for param in params:
        if getattr(param, "is_flag", False) or getattr(param, "count", False):
            param.metavar = ""
        elif param.metavar is None:
            param.metavar = (param.name or "value").upper()
        if param.param_type_name == "argument":
            # an argument's type label ignores the metavar: the usage line names it
            param.display_type_rich = _no_type
    for sub in getattr(command, "commands", {}).values():
        plain_metavars(sub)


def _no_type(ctx: Any) -> None:
    return None
