"""Secret values from the config (per-feed HTTP options): a type that never shows them.

``feeds.yaml`` names a secret rather than holding it: ``{env: NAME}`` (an environment
variable) or ``{file: PATH}`` (a file's content, surrounding whitespace stripped, as
secret files usually end with a newline), or gives it as a plain string. Whatever the
source, the value is held in a :class:`Secret`: its ``repr``, ``str`` and format say
only where it came from, so a secret that reaches a log line, an error message, a
traceback's locals or a debug print shows as ``Secret(env EXAMPLE_KEY)``, never as its
value. Only ``reveal()`` gives the value, and only ``fetch`` calls it, to build a request.
"""

from __future__ import annotations

from typing import Any


class Secret:
    """A value that is not shown: ``reveal()`` gives it; ``str``/``repr`` name its source."""

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str = "value") -> None:
        self._value = value
        self.source = source  # "env NAME", "file PATH" or "value": where it came from

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self.source})"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return format(repr(self), spec)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __reduce__(self) -> tuple[Any, ...]:
        return (Secret, (self._value, self.source))
