"""The per-feed options of ``feeds.yaml`` (issue 19): entry filter rules, HTTP options
and the secret values they take (a plain string, ``{env: NAME}`` or ``{file: PATH}``).

The pydantic models validate the shapes (``config`` puts them into its own models); after
validation :class:`Secrets` reads the secret values, collecting what cannot be read as
``configcheck`` problems that name the feed, the field and the variable or file (never a
value), and :func:`http_options` / :func:`filter_rules` build the records the stages use.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from . import configcheck, filters
from .records import DEFAULT_FILTER_FIELDS, FilterField, FilterRule, HttpOptions
from .secret import Secret

# ---- secret values: a plain string, {env: NAME} or {file: PATH} ---------------------------


class SecretRef(BaseModel):
    """``{env: NAME}`` or ``{file: PATH}``: where a value is read at config load."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    env: str | None = None
    file: str | None = None

    @model_validator(mode="after")
    def _one(self) -> SecretRef:
        if (self.env is None) == (self.file is None):
            raise ValueError("give one of env: NAME or file: PATH")
        if self.env is not None and not self.env.strip():
            raise ValueError("env: needs a variable name")
        if self.file is not None and not self.file.strip():
            raise ValueError("file: needs a path")
        return self


def _secret_shape(value: Any) -> Any:
    if isinstance(value, str | SecretRef):
        return value
    if isinstance(value, dict):
        return SecretRef.model_validate(value)
    raise ValueError("must be a string, {env: NAME} or {file: PATH}")


SecretValue = Annotated[str | SecretRef, BeforeValidator(_secret_shape)]

# an HTTP token (RFC 9110): header and cookie names
_TOKEN_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# headers the fetcher owns: the address guard (Host), framing, validators
_RESERVED_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "te",
        "upgrade",
        "if-none-match",
        "if-modified-since",
        "proxy-authorization",
    }
)
PROXY_SCHEMES = ("http", "https", "socks5")


def _proxy_problem(value: str) -> str | None:
    """What is wrong with a proxy URL, without repeating it (it may hold a password)."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return "is not a proxy URL (http://, https:// or socks5://HOST:PORT)"
    if parts.scheme.lower() not in PROXY_SCHEMES or not parts.hostname:
        return "is not a proxy URL (http://, https:// or socks5://HOST:PORT)"
    if parts.scheme.lower() == "socks5" and port is None:
        return "a socks5:// proxy needs its port (socks5://HOST:PORT)"
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return "a proxy URL has no path, query or fragment (SCHEME://HOST:PORT)"
    return None


# ---- entry filters ----------------------------------------------------------------------


class FilterRuleModel(BaseModel):
    """One rule of ``filters:``: exactly one of ``block``/``keep`` (a regex) or
    ``block_words``/``keep_words`` (plain words or phrases), and the fields it reads."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    block: str | None = None
    keep: str | None = None
    block_words: tuple[str, ...] | None = None
    keep_words: tuple[str, ...] | None = None
    fields: tuple[FilterField, ...] = DEFAULT_FILTER_FIELDS

    @field_validator("block", "keep")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value:
            raise ValueError("empty regular expression (it would match every entry)")
        if len(value) > 4000:
            raise ValueError("regular expression longer than 4000 characters")
        filters.compile_pattern(value)  # ValueError: invalid regular expression: …
        return value

    @field_validator("block_words", "keep_words", mode="before")
    @classmethod
    def _words(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list | tuple) and (
            not value or any(not isinstance(w, str) or not w.split() for w in value)
        ):
            raise ValueError("must be a list of non-empty words or phrases")
        return value

    @field_validator("fields", mode="before")
    @classmethod
    def _fields(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list | tuple) and not value:
            raise ValueError("must name at least one field")
        return value

    @model_validator(mode="after")
    def _one(self) -> FilterRuleModel:
        given = [
            name
            for name in ("block", "keep", "block_words", "keep_words")
            if getattr(self, name) is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "a rule has exactly one of block, keep (a regex), block_words or keep_words"
                + (f" (this one has {', '.join(given)})" if given else "")
            )
        return self

    def rule(self, label: str) -> FilterRule:
        if self.block is not None or self.keep is not None:
            action = "block" if self.block is not None else "keep"
            pattern = self.block if self.block is not None else self.keep
            assert pattern is not None
            shown = pattern if len(pattern) <= 60 else pattern[:59] + "…"
            text = f'{label} {action} "{shown}"'
        else:
            action = "block" if self.block_words is not None else "keep"
            words = self.block_words if self.block_words is not None else self.keep_words
            assert words is not None
            pattern = filters.words_pattern(words)
            shown = ", ".join(words)
            text = f"{label} {action}_words [{shown if len(shown) <= 60 else shown[:59] + '…'}]"
        fields = tuple(dict.fromkeys(self.fields))
        if fields != DEFAULT_FILTER_FIELDS:
            text += f" on {', '.join(fields)}"
        filters.compile_pattern(pattern)
        return FilterRule(action, pattern, fields, text)  # type: ignore[arg-type]


# ---- per-feed HTTP options ----------------------------------------------------------------


class BasicAuthModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    username: SecretValue
    password: SecretValue


class FeedHttpModel(BaseModel):
    """A feed's ``http:`` options (see docs/config.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    headers: dict[str, SecretValue] = Field(default_factory=dict)
    basic_auth: BasicAuthModel | None = None
    cookies: dict[str, SecretValue] = Field(default_factory=dict)
    user_agent: SecretValue | None = None
    proxy: SecretValue | None = None

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not _TOKEN_RE.match(name):
                raise ValueError(f"{name!r} is not a header name")
            if name.lower() in _RESERVED_HEADERS:
                raise ValueError(f"the {name} header is set by the fetcher; it cannot be given")
        return value

    @field_validator("cookies")
    @classmethod
    def _cookies(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not _TOKEN_RE.match(name):
                raise ValueError(f"{name!r} is not a cookie name")
        return value

    @model_validator(mode="after")
    def _overlaps(self) -> FeedHttpModel:
        names = {n.lower() for n in self.headers}
        for header, option in (
            ("authorization", "basic_auth"),
            ("cookie", "cookies"),
            ("user-agent", "user_agent"),
        ):
            if header in names and getattr(self, option):
                raise ValueError(f"give either the {header} header or {option}, not both")
        return self


class Secrets:
    """Reads the secret values of a config ({env: NAME}, {file: PATH}), collecting what
    cannot be read as problems; a problem names the variable or the file, never a value."""

    def __init__(self, environ: Mapping[str, str], base: Path) -> None:
        self.environ = environ
        self.base = base  # relative secret files are read from the config file's folder
        self.problems: list[configcheck.Problem] = []

    def read(self, ref: str | SecretRef, loc: configcheck.Loc) -> Secret | None:
        if isinstance(ref, str):
            value, source = ref, "value"
        elif ref.env is not None:
            name = ref.env.strip()
            found = self.environ.get(name)
            if found is None or not found.strip():
                state = "is not set" if found is None else "is empty"
                self.problems.append(
                    configcheck.Problem(loc, f"environment variable {name} {state}")
                )
                return None
            value, source = found, f"env {name}"
        else:
            assert ref.file is not None
            path = Path(ref.file.strip()).expanduser()
            if not path.is_absolute():
                path = self.base / path
            try:
                value = path.read_text(encoding="utf-8").strip()
            except FileNotFoundError:
                self.problems.append(configcheck.Problem(loc, f"file {path} does not exist"))
                return None
            except UnicodeDecodeError:
                self.problems.append(configcheck.Problem(loc, f"file {path} is not UTF-8 text"))
                return None
            except OSError as exc:
                problem = f"cannot read file {path}: {exc.strerror or type(exc).__name__}"
                self.problems.append(configcheck.Problem(loc, problem))
                return None
            if not value:
                self.problems.append(configcheck.Problem(loc, f"file {path} is empty"))
                return None
            source = f"file {path}"
        if "\n" in value or "\r" in value or "\x00" in value:
            where = "the value" if source == "value" else f"the value of {source}"
            self.problems.append(configcheck.Problem(loc, f"{where} contains a line break"))
            return None
        return Secret(value, source)

    def proxy(self, ref: str | SecretRef, loc: configcheck.Loc) -> Secret | None:
        secret = self.read(ref, loc)
        if secret is None:
            return None
        problem = _proxy_problem(secret.reveal())
        if problem is not None:
            where = "" if secret.source == "value" else f"the value of {secret.source} "
            self.problems.append(configcheck.Problem(loc, f"{where}{problem}"))
            return None
        return secret


def _origin(url: str) -> str:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    return f"{scheme}://{(parts.hostname or '').lower()}:{port}"


def http_options(
    model: FeedHttpModel, url: str, secrets: Secrets, loc: configcheck.Loc
) -> HttpOptions:
    def pairs(values: dict[str, str | SecretRef], key: str) -> tuple[tuple[str, Secret], ...]:
        found = ((name, secrets.read(ref, (*loc, key, name))) for name, ref in values.items())
        return tuple((name, secret) for name, secret in found if secret is not None)

    auth = None
    if model.basic_auth is not None:
        user = secrets.read(model.basic_auth.username, (*loc, "basic_auth", "username"))
        password = secrets.read(model.basic_auth.password, (*loc, "basic_auth", "password"))
        if user is not None and ":" in user.reveal():
            problem = "a basic auth user name cannot contain ':'"
            secrets.problems.append(configcheck.Problem((*loc, "basic_auth", "username"), problem))
        auth = (user, password) if user is not None and password is not None else None
    agent = secrets.read(model.user_agent, (*loc, "user_agent")) if model.user_agent else None
    cookies = pairs(model.cookies, "cookies")
    for name, value in cookies:
        if ";" in value.reveal():
            problem = "a cookie value cannot contain ';'"
            secrets.problems.append(configcheck.Problem((*loc, "cookies", name), problem))
    return HttpOptions(
        origin=_origin(url),
        headers=pairs(model.headers, "headers"),
        basic_auth=auth,
        cookies=cookies,
        user_agent=agent.reveal() if agent is not None else None,
        proxy=secrets.proxy(model.proxy, (*loc, "proxy")) if model.proxy is not None else None,
    )


def filter_rules(models: tuple[FilterRuleModel, ...], label: str) -> tuple[FilterRule, ...]:
    """Compiled rules, each labelled with its place: ``filters[0]``."""
    return tuple(m.rule(f"{label}[{i}]") for i, m in enumerate(models))
