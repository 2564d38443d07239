"""What is wrong with a ``feeds.yaml``, said so that it can be fixed in one pass.

``config`` validates; this module turns what failed into problems an operator can act
on: each names its line (from the YAML document's node marks, read again only when
something is wrong), the feed or export and the field; an unknown key comes with the
nearest known one ("did you mean 'interval'?"); a tab says "use spaces"; feeds that are
one feed under two spellings of a URL (``records.url_key``, as ``feeds import`` compares
them) and repeated names are problems too. Every problem is listed, in file order.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ValidationError

from .errors import ConfigError
from .records import url_key

Loc = tuple[int | str, ...]


@dataclass(frozen=True)
class Problem:
    loc: Loc  # where in the document: ("feeds", 2, "interval")
    message: str  # "{other_line}" in it becomes ", line N" of ``other`` (or nothing)
    other: Loc | None = None  # the entry this one repeats


def config_error(
    path: Path | str, problems: Sequence[Problem], raw: Any, text: str | None
) -> ConfigError:
    """One error listing every problem, each with its line when ``text`` is known."""
    root = _compose(text) if text is not None else None
    placed = sorted(
        ((_line(root, p.loc), i, p) for i, p in enumerate(problems)),
        key=lambda item: (item[0] if item[0] is not None else 1 << 30, item[1]),
    )
    rendered = []
    for line, _, problem in placed:
        other = _line(root, problem.other) if problem.other is not None else None
        message = problem.message.replace("{other_line}", f", line {other}" if other else "")
        rendered.append((line, f"{_where(problem.loc, raw)}: {message}"))
    if len(rendered) == 1:
        line, message = rendered[0]
        at = f", line {line}" if line is not None else ""
        return ConfigError(f"{path}{at}: {message}")
    body = "\n".join(
        f"  {f'line {line}: ' if line is not None else ''}{message}" for line, message in rendered
    )
    return ConfigError(f"{path}: {len(rendered)} problems:\n{body}")


def yaml_error(path: Path | str, text: str, exc: yaml.YAMLError) -> ConfigError:
    """The YAML parser's complaint, with its place; a tab where YAML wants spaces says so."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is None:
        return ConfigError(f"{path}: invalid YAML: {problem}")
    where = f"line {mark.line + 1}, column {mark.column + 1}"
    source_lines = text.splitlines()
    line = source_lines[mark.line] if mark.line < len(source_lines) else ""
    tab = "'\\t'" in problem or "tab character" in problem
    if tab or line[mark.column : mark.column + 1] == "\t":
        return ConfigError(
            f"{path}: invalid YAML at {where}: a tab character; YAML indents with spaces "
            "only: use spaces"
        )
    return ConfigError(f"{path}: invalid YAML at {where}: {problem}")


# ---- schema errors (pydantic) -----------------------------------------------------------


def schema_problems(
    exc: ValidationError, raw: Any, root: type[BaseModel], settings: type[BaseModel]
) -> list[Problem]:
    problems = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        kind = error["type"]
        message = str(error["msg"]).removeprefix("Value error, ")
        if kind == "extra_forbidden":
            problems.append(Problem(loc, "unknown key" + _suggestion(root, settings, loc)))
            continue
        if kind in ("model_type", "dict_type"):
            got = type(error.get("input")).__name__
            message = f"must be a mapping of keys, not a {_yaml_type(got)}"
        elif kind == "list_type":
            got = type(error.get("input")).__name__
            message = f"must be a list, not a {_yaml_type(got)}"
        problems.append(Problem(loc, message))
    return problems


def _yaml_type(python_name: str) -> str:
    return {"str": "string", "dict": "mapping", "list": "list", "NoneType": "null"}.get(
        python_name, python_name
    )


def _suggestion(root: type[BaseModel], settings: type[BaseModel], loc: Loc) -> str:
    key = loc[-1]
    if not isinstance(key, str):
        return ""
    known = _fields_at(root, loc[:-1])
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f" (did you mean '{close[0]}'?)"
    if loc[:1] != ("settings",) and key in settings.model_fields:
        return f" ('{key}' is a setting: it goes under settings:)"
    if known:
        return f" (known keys: {', '.join(known)})"
    return ""


def _fields_at(model: type[BaseModel], loc: Loc) -> list[str]:
    """The keys allowed at ``loc`` (list indexes skipped), from the models' fields."""
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        found = _model_in(field.annotation) if field is not None else None
        if found is None:
            return []
        model = found
    return list(model.model_fields)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


# ---- problems across entries ------------------------------------------------------------


def cross_problems(raw: dict[str, Any]) -> list[Problem]:
    """Repeated feeds (by ``url_key``), repeated feed names and export names, selectors
    on a feed that is no HTML page: each repeat names the entry it repeats."""
    problems: list[Problem] = []
    feeds: list[Any] = raw["feeds"] if isinstance(raw.get("feeds"), list) else []
    urls: dict[str, int] = {}
    names: dict[str, int] = {}
    for index, entry in enumerate(feeds):
        if not isinstance(entry, dict):
            continue
        url = entry.get("url")
        if isinstance(url, str) and _http(url):
            first = urls.setdefault(url_key(url), index)
            if first != index:
                first_url = str(feeds[first]["url"]).strip()
                same = ", spelled differently" if first_url != url.strip() else ""
                problems.append(
                    Problem(
                        ("feeds", index, "url"),
                        f"duplicate of feed #{first + 1} ({first_url}{{other_line}}){same}",
                        other=("feeds", first),
                    )
                )
        name = entry.get("name")
        if isinstance(name, str) and name.strip():
            first = names.setdefault(name.strip(), index)
            if first != index:
                problems.append(
                    Problem(
                        ("feeds", index, "name"),
                        f"duplicate name {name.strip()!r}: also the name of feed #{first + 1} "
                        f"({_entry_url(feeds, first)}{{other_line}})",
                        other=("feeds", first),
                    )
                )
        if entry.get("selectors") is not None and entry.get("type", "feed") in ("feed", None):
            problems.append(Problem(("feeds", index, "selectors"), "only allowed with type: html"))
    exports = raw.get("exports")
    export_names: dict[str, int] = {}
    for index, entry in enumerate(exports if isinstance(exports, list) else []):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            continue
        first = export_names.setdefault(entry["name"], index)
        if first != index:
            problems.append(
                Problem(
                    ("exports", index, "name"),
                    f"duplicate of export #{first + 1} ({entry['name']}{{other_line}})",
                    other=("exports", first),
                )
            )
    problems += _webhook_problems(raw, feeds)
    return problems


def _webhook_problems(raw: dict[str, Any], feeds: list[Any]) -> list[Problem]:
    """A webhook URL listed twice; a ``feeds:`` filter naming no configured feed."""
    problems: list[Problem] = []
    hooks = raw.get("webhooks")
    known = {
        str(entry.get(key)).strip()
        for entry in feeds
        if isinstance(entry, dict)
        for key in ("url", "name")
        if isinstance(entry.get(key), str)
    }
    seen: dict[str, int] = {}
    for index, entry in enumerate(hooks if isinstance(hooks, list) else []):
        if not isinstance(entry, dict):
            continue
        url = entry.get("url")
        if isinstance(url, str):
            first = seen.setdefault(url.strip(), index)
            if first != index:
                problems.append(
                    Problem(
                        ("webhooks", index, "url"),
                        f"duplicate of webhook #{first + 1}{{other_line}}: list its events "
                        "in one entry",
                        other=("webhooks", first),
                    )
                )
        wanted = entry.get("feeds")
        for name in [wanted] if isinstance(wanted, str) else wanted or ():
            if isinstance(name, str) and name.strip() not in known:
                problems.append(
                    Problem(("webhooks", index, "feeds"), f"no feed has the URL or name {name!r}")
                )
    return problems


def _http(url: str) -> bool:
    parts = urlsplit(url.strip())
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


def _entry_url(entries: list[Any], index: int) -> str:
    return str(entries[index].get("url", "")).strip()


# ---- places ---------------------------------------------------------------------------


def _where(loc: Loc, raw: Any) -> str:
    """``feed #2 (https://…), field 'interval'``: the entry by number and url (or name)."""
    for section, noun, label in (
        ("feeds", "feed", "url"),
        ("exports", "export", "name"),
        ("webhooks", "webhook", "url"),
    ):
        if len(loc) >= 2 and loc[0] == section and isinstance(loc[1], int):
            index = loc[1]
            value = None
            if isinstance(raw, dict):
                entries = raw.get(section)
                if isinstance(entries, list) and index < len(entries):
                    entry = entries[index]
                    value = entry.get(label) if isinstance(entry, dict) else None
            entry_text = f"{noun} #{index + 1}" + (f" ({value})" if value else "")
            field = ".".join(str(p) for p in loc[2:]) or "(entry)"
            return f"{entry_text}, field '{field}'"
    return f"field '{'.'.join(str(p) for p in loc)}'"


def _compose(text: str) -> yaml.Node | None:
    """The document's node tree (with marks), or None when it has none to give."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        node: yaml.Node | None = yaml.compose(text, Loader=loader)
    except (yaml.YAMLError, ValueError, RecursionError):
        return None
    return node


def _line(root: yaml.Node | None, loc: Loc) -> int | None:
    """The 1-based line of ``loc`` in the document: the key's line for a key in a
    mapping, the item's for a list item; as deep as the document goes (a missing key is
    reported at its entry)."""
    if root is None:
        return None
    node = root
    line = node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == part:
                    line = key.start_mark.line + 1
                    node = value
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return line
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line
