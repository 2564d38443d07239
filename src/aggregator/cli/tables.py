"""Tables that keep URLs whole.

rich shrinks the widest columns first when a table is wider than the terminal, so a
feed's URL was the first thing cut short (``https://www.th…``) while names and tags still
had room. Here the columns are sized before rich sees them: on a terminal the other
columns wrap first (down to their longest word, or 10 characters) and the ``keep``
columns (URLs) are shortened, folded onto a second line rather than cut, only when
everything else is as narrow as it gets. Into a pipe or a file, rows are never wrapped:
the table is as wide as its longest row, for ``grep`` and ``cut``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from rich.table import Table

from .root import PipeConsole

MIN_WRAP = 10  # a wrapping column keeps at least its longest word, up to this width
MIN_KEEP = 20  # a kept column is never narrower than this
WHOLE_LINES = 1_000_000  # the width of a console printing into a pipe: no line is wrapped


def print_table(
    console: PipeConsole,
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    keep: Collection[str] = ("url",),
    right: Collection[str] = (),
    title: str | None = None,
) -> None:
    """Print ``rows`` under ``columns`` (``right``: right-aligned columns)."""
    natural = [
        max([_width(name), *(_width(row[i]) for row in rows)]) for i, name in enumerate(columns)
    ]
    overhead = 3 * len(columns) + 1  # borders and a space of padding on each side
    out = console
    widths: list[int] | None = natural
    if console.is_terminal:
        widths = _fit(columns, rows, natural, keep, console.width - overhead)
    else:
        out = PipeConsole(width=WHOLE_LINES)
    if title:  # a line of its own: rich would pad it to the table's width
        out.print(title, style="bold", highlight=False, markup=False)
    table = Table(show_header=True)
    for index, name in enumerate(columns):
        table.add_column(
            name,
            justify="right" if name in right else "left",
            overflow="fold",
            width=widths[index] if widths is not None else None,
        )
    for row in rows:
        table.add_row(*row)
    out.print(table, highlight=False)


def _width(cell: str) -> int:
    return max((len(line) for line in cell.splitlines()), default=0)


def _fit(
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    natural: list[int],
    keep: Collection[str],
    room: int,
) -> list[int] | None:
    """Column widths that fit ``room``: the other columns narrowed first, widest first,
    down to their longest word (at most ``MIN_WRAP``); then the kept ones down to
    ``MIN_KEEP``; on a narrow terminal, the kept ones and then the others down to their
    header's longest word. None when even that does not fit (rich then does what it can)."""
    widths = list(natural)
    excess = sum(widths) - room
    kept = [i for i, name in enumerate(columns) if name in keep]
    others = [i for i in range(len(columns)) if i not in kept]
    header = [max((len(w) for w in name.split()), default=1) for name in columns]
    word = [
        max((len(w) for cell in (name, *(row[i] for row in rows)) for w in cell.split()), default=1)
        for i, name in enumerate(columns)
    ]
    stages = (
        (others, [max(header[i], min(word[i], MIN_WRAP)) for i in range(len(columns))]),
        (kept, [min(natural[i], max(MIN_KEEP, header[i])) for i in range(len(columns))]),
        (kept, [min(natural[i], max(MIN_WRAP, header[i])) for i in range(len(columns))]),
        (others, header),
    )
    for group, floor in stages:
        while excess > 0:
            narrowable = [i for i in group if widths[i] > floor[i]]
            if not narrowable:
                break
            widest = max(narrowable, key=lambda i: widths[i])
            widths[widest] -= 1
            excess -= 1
    return widths if excess <= 0 else None
