"""Secret references in ``feeds.yaml``: a plain string, ``{env: NAME}`` or ``{file: PATH}``.

One resolver for every secret the config holds (webhook signing secrets, per-feed HTTP
credentials): ``resolve`` turns the reference into a ``Secret``, whose ``repr`` and
``str`` never show the value, so a secret that ends up in a log line, an exception or a
``repr`` of the settings shows as ``Secret(env HOOK_SECRET)``. Errors name what is
missing (the variable, the file), never a value.

Pure apart from reading the environment mapping and the file it is given; the bottom
layer: imports nothing of the project.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping
from pathlib import Path

MAX_FILE_BYTES = 64 * 1024  # a secret file larger than this is not a secret file


class SecretRefError(ValueError):
    """A reference that cannot be resolved; the message names the variable or file."""


class Secret:
    """A resolved secret. ``reveal()`` gives the value; nothing else shows it."""

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str) -> None:
        self._value = value
        self.source = source  # "inline", "env NAME" or "file PATH": safe to print

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self.source})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(self.source)

    def __reduce__(self) -> tuple[type[Secret], tuple[str, str]]:
        return (Secret, (self._value, self.source))


def check(ref: object) -> object:
    """``ref`` when it has the shape of a reference (for validating a config without
    resolving it); SecretRefError otherwise."""
    if isinstance(ref, str):
        if not ref:
            raise SecretRefError("an empty secret")
        return ref
    if isinstance(ref, Mapping):
        keys = set(ref)
        if len(keys) == 1 and keys <= {"env", "file"}:
            (key,) = keys
            value = ref[key]
            if not isinstance(value, str) or not value.strip():
                raise SecretRefError(f"'{key}' must name a {_noun(key)}")
            return dict(ref)
    raise SecretRefError(
        "must be a string, {env: VARIABLE} or {file: PATH} (got "
        + (f"the keys {', '.join(map(str, ref))}" if isinstance(ref, Mapping) else _kind(ref))
        + ")"
    )


def resolve(
    ref: object,
    *,
    environ: Mapping[str, str] | None = None,
    base: Path | None = None,
) -> Secret:
    """The secret ``ref`` names: the string itself, the environment variable's value
    (``environ``, default ``os.environ``) or the file's text without its trailing line
    break (a relative ``PATH`` is taken from ``base``, the config file's folder, when
    given). An empty variable or file is an error, as is a missing one."""
    checked = check(ref)
    if isinstance(checked, str):
        return Secret(checked, "inline")
    assert isinstance(checked, dict)
    if "env" in checked:
        name = str(checked["env"]).strip()
        env = os.environ if environ is None else environ
        value = env.get(name)
        if value is None:
            raise SecretRefError(f"the environment variable {name} is not set")
        if not value:
            raise SecretRefError(f"the environment variable {name} is empty")
        return Secret(value, f"env {name}")
    path = Path(str(checked["file"]).strip()).expanduser()
    if base is not None and not path.is_absolute():
        path = base / path
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise SecretRefError(f"the secret file {path} does not exist") from None
    except OSError as exc:
        raise SecretRefError(f"cannot read the secret file {path}: {exc.strerror}") from None
    if len(data) > MAX_FILE_BYTES:
        raise SecretRefError(f"the secret file {path} is larger than {MAX_FILE_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretRefError(f"the secret file {path} is not UTF-8 text") from None
    text = text.rstrip("\r\n")
    if not text:
        raise SecretRefError(f"the secret file {path} is empty")
    return Secret(text, f"file {path}")


def _noun(key: str) -> str:
    return "variable" if key == "env" else "file"


def _kind(value: object) -> str:
    return {
        "NoneType": "null",
        "list": "a list",
        "int": "a number",
        "float": "a number",
        "bool": "a boolean",
    }.get(type(value).__name__, type(value).__name__)
