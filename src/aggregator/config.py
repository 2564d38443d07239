"""Load and validate ``feeds.yaml`` (plus environment) into frozen settings.

Every error names the file, the feed (by index and url) and the field.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from . import configcheck, filters
from .errors import ConfigError
from .records import (
    DEFAULT_FILTER_FIELDS,
    FeedSpec,
    FilterField,
    FilterRule,
    FilterRules,
    HtmlSelectors,
    HttpOptions,
)
from .secret import Secret

DEFAULT_CONFIG = "config/feeds.yaml"
DEFAULT_DATABASE_URL = "sqlite:///data/aggregator.db"
ENV_CONFIG = "AGGREGATOR_CONFIG"
ENV_DATABASE_URL = "AGGREGATOR_DATABASE_URL"

VERSION = "0.1.0"

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}
_DURATION_PARTS_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")


def parse_duration(value: object) -> float:
    """``15m``, ``2h``, ``1h30m``, ``90`` (seconds), ``0.5s`` → seconds."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration (use e.g. 30s, 15m, 2h, 1d)")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        match = _DURATION_RE.match(text)
        if match:
            seconds = float(match.group(1)) * _UNITS[match.group(2)]
        elif text and _DURATION_PARTS_RE.sub("", text).strip() == "":
            seconds = sum(float(n) * _UNITS[u] for n, u in _DURATION_PARTS_RE.findall(text))
        else:
            raise ValueError(f"{value!r} is not a duration (use e.g. 30s, 15m, 2h, 1d)")
    else:
        raise ValueError(f"{value!r} is not a duration (use e.g. 30s, 15m, 2h, 1d)")
    if seconds < 0:
        raise ValueError(f"{value!r} is negative")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


def _check_http_url(value: str) -> str:
    value = value.strip()
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an http(s) URL with a host")
    return value


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
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regular expression: {exc}") from None
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
        return FilterRule(action, re.compile(pattern), fields, text)  # type: ignore[arg-type]


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


class HttpSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)


class Settings(BaseModel):
    """The ``settings:`` block; every key optional."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    database_url: str = DEFAULT_DATABASE_URL
    default_interval: Duration = 1800.0
    min_interval: Duration = 600.0
    max_interval: Duration = 86400.0
    full_text: bool = True
    concurrency: int = Field(16, ge=1, le=1024)
    per_host_concurrency: int = Field(2, ge=1, le=1024)
    per_host_delay: Duration = 1.0
    user_agent: str | None = None
    contact_url: str | None = None
    timeout: Duration = 60.0
    connect_timeout: Duration = 10.0
    read_timeout: Duration = 20.0
    max_body_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    max_redirects: int = Field(5, ge=0, le=20)
    http_transport: Literal["aiohttp", "httpx"] = "aiohttp"
    ca_bundle: str | None = None  # PEM file of extra CAs trusted for https, beside the usual roots
    max_entries_per_feed: int = Field(10_000, ge=1)
    article_budget: Duration = 60.0  # a poll's time for fetching article pages; 0 = no limit
    allow_private_networks: tuple[str, ...] = ()
    workers: int | None = Field(None, ge=1, le=64)
    tick: Duration = 5.0
    reload_interval: Duration = (
        2.0  # how often the daemon checks feeds.yaml for edits; 0 = SIGHUP only
    )
    lease_seconds: Duration = 300.0
    dedup_window: Duration = 14 * 86400.0
    health_max_age: Duration = 7200.0
    http: HttpSettings | None = None
    # where the HTTP face is reached from outside (export links); else the Host header
    public_url: str | None = None
    feed_export_limit: int = Field(100, ge=1)  # Atom/RSS/JSON Feed entries without a limit
    filters: tuple[FilterRuleModel, ...] = ()  # entry filters of every feed, before its own
    http_proxy: SecretValue | None = None  # every request through this proxy (see docs)

    @field_validator("allow_private_networks", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> Any:
        if value is None:
            return ()
        if isinstance(value, str):
            value = [value]
        for net in value:
            try:
                ipaddress.ip_network(str(net), strict=False)
            except ValueError as exc:
                raise ValueError(f"{net!r} is not a CIDR network ({exc})") from None
        return tuple(str(n) for n in value)

    @field_validator("contact_url", "public_url")
    @classmethod
    def _contact(cls, value: str | None) -> str | None:
        return None if value is None else _check_http_url(value)

    @model_validator(mode="after")
    def _bounds(self) -> Settings:
        if self.min_interval > self.max_interval:
            raise ValueError("min_interval is larger than max_interval")
        return self

    def effective_user_agent(self) -> str:
        if self.user_agent:
            return self.user_agent
        contact = f"; +{self.contact_url}" if self.contact_url else ""
        return f"aggregator/{VERSION} (feed aggregator{contact})"


class SelectorsModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    item: str | None = None
    title: str | None = None
    link: str | None = None
    summary: str | None = None
    date: str | None = None
    link_pattern: str | None = None

    @field_validator("item", "title", "link", "summary", "date")
    @classmethod
    def _selector(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        css, attr = HtmlSelectors.split(value)
        if info.field_name == "item" and attr is not None:
            raise ValueError("the item selector selects elements; '@attribute' is not allowed here")
        if not css:
            if attr is None:
                raise ValueError("empty CSS selector")
            return value  # "@attr": an attribute of the item itself
        import soupsieve  # loaded only for configs with selectors (compiling it is not cheap)

        try:
            soupsieve.compile(css)
        except soupsieve.SelectorSyntaxError as exc:
            problem = str(exc).splitlines()[0]
            raise ValueError(f"invalid CSS selector {css!r}: {problem}") from None
        return value

    @field_validator("link_pattern")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression: {exc}") from None
        return value


class FeedModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str
    name: str | None = None
    tags: tuple[str, ...] = ()
    interval: Duration | None = None
    full_text: bool | None = None
    enabled: bool = True
    type: Literal["feed", "html"] = "feed"
    selectors: SelectorsModel | None = None
    filters: tuple[FilterRuleModel, ...] = ()
    http: FeedHttpModel | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _check_http_url(value)

    @field_validator("tags", mode="before")
    @classmethod
    def _tags(cls, value: Any) -> Any:
        if isinstance(value, str):
            return (value,)
        return value

    @field_validator("interval")
    @classmethod
    def _interval(cls, value: float | None) -> float | None:
        if value is not None and value < 60:
            raise ValueError("must be at least 1m")
        return value


_CRON_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _cron_day(token: str) -> int:
    token = token.strip().lower()
    if token.isdigit() and 0 <= int(token) <= 7:
        return int(token)
    if token[:3] in _CRON_DAYS:
        return _CRON_DAYS.index(token[:3])
    raise ValueError(f"{token!r} is not a day of the week (0-7 or sun-sat)")


def _cron_weekdays(field: str) -> str:
    """A crontab day-of-week field (0 or 7 = Sunday, 1 = Monday) as APScheduler day
    names: APScheduler 3 counts 0 = Monday, so numbers cannot be passed through."""
    if field == "*":
        return field
    days: set[int] = set()
    for part in field.split(","):
        step = 1
        if "/" in part:
            part, step_text = part.split("/", 1)
            if not step_text.isdigit() or int(step_text) < 1:
                raise ValueError(f"{step_text!r} is not a step")
            step = int(step_text)
        if part == "*":
            low, high = 0, 6
        elif "-" in part:
            first, last = part.split("-", 1)
            low, high = _cron_day(first), _cron_day(last)
        else:
            low = _cron_day(part)
            high = 6 if step > 1 else low
        if high < low:
            raise ValueError(f"{part!r} is a backwards range")
        days.update(day % 7 for day in range(low, high + 1, step))
    return ",".join(_CRON_DAYS[d] for d in sorted(days))


def cron_trigger(schedule: str, timezone: str | None = None) -> Any:
    """An APScheduler CronTrigger for a standard 5-field crontab expression (minute hour
    day-of-month month day-of-week, Sunday = 0 or 7) in ``timezone`` (default UTC)."""
    from apscheduler.triggers.cron import CronTrigger

    fields = schedule.split()
    if len(fields) != 5:
        raise ValueError(f"wrong number of fields; got {len(fields)}, expected 5")
    minute, hour, day, month, weekday = fields
    return CronTrigger(
        minute=minute,
        hour=hour,
        day=day,
        month=month,
        day_of_week=_cron_weekdays(weekday),
        timezone=timezone or "UTC",
    )


ExportFormat = Literal["atom", "rss", "json", "jsonl", "csv", "html", "opml"]
EXPORT_FORMATS: tuple[str, ...] = ("atom", "rss", "json", "jsonl", "csv", "html", "opml")


def _check_when(value: str | None) -> str | None:
    """A duration before the run (``24h``) or an ISO 8601 date/timestamp."""
    if value is None:
        return None
    try:
        parse_duration(value)
        return value
    except ValueError:
        pass
    try:
        datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(
            f"{value!r} is neither a duration (e.g. 24h, 7d) nor an ISO 8601 timestamp"
        ) from None
    return value


class ExportModel(BaseModel):
    """One scheduled export (``exports:``); see docs/exports.md."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1)
    format: ExportFormat
    path: str = Field(min_length=1)
    timezone: str | None = None  # IANA name for the schedule and digest times; default UTC
    schedule: str  # crontab: minute hour day-of-month month day-of-week
    since: str | None = None
    until: str | None = None
    feeds: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    search: str | None = None
    limit: int | None = Field(None, ge=1)
    per_item: bool = False
    title: str | None = None
    link: str | None = None

    @field_validator("format", mode="before")
    @classmethod
    def _format(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() not in EXPORT_FORMATS:
            raise ValueError(f"unknown format {value!r} (one of {', '.join(EXPORT_FORMATS)})")
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: name too long
                raise ValueError(
                    f"unknown time zone {value!r} (use e.g. UTC, Europe/Berlin)"
                ) from None
        return value

    @field_validator("since", "until")
    @classmethod
    def _when(cls, value: str | None) -> str | None:
        return _check_when(value)

    @field_validator("feeds", "tags", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value

    @field_validator("link")
    @classmethod
    def _link(cls, value: str | None) -> str | None:
        return None if value is None else _check_http_url(value)

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str, info: ValidationInfo) -> str:
        try:
            cron_trigger(value, info.data.get("timezone"))
        except ValueError as exc:
            raise ValueError(
                f"{value!r} is not a cron expression (minute hour day month weekday, "
                f"e.g. '0 7 * * *'): {exc}"
            ) from None
        return value


class ConfigModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    settings: Settings = Field(default_factory=lambda: Settings())
    feeds: list[FeedModel] = Field(default_factory=list)
    exports: list[ExportModel] = Field(default_factory=list)


@dataclass(frozen=True)
class Config:
    path: Path | None
    settings: Settings
    feeds: tuple[FeedSpec, ...]
    exports: tuple[ExportModel, ...] = ()
    http_proxy: Secret | None = None  # settings.http_proxy, read (it may hold a password)

    @property
    def database_url(self) -> str:
        return self.settings.database_url


class _Secrets:
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


def _http_options(
    model: FeedHttpModel, url: str, secrets: _Secrets, loc: configcheck.Loc
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


def _feed_spec(
    model: FeedModel,
    settings: Settings,
    global_rules: tuple[FilterRule, ...],
    http: HttpOptions | None = None,
) -> FeedSpec:
    selectors = None
    if model.selectors is not None:
        selectors = HtmlSelectors(**model.selectors.model_dump())
    rules = global_rules + filter_rules(model.filters, "filters")
    return FeedSpec(
        url=model.url,
        name=model.name,
        tags=tuple(model.tags),
        interval=model.interval,
        full_text=settings.full_text if model.full_text is None else model.full_text,
        enabled=model.enabled,
        type=model.type,
        selectors=selectors,
        filters=FilterRules(rules, filters.fingerprint(rules)) if rules else None,
        http=http,
    )


def parse_config(
    raw: Any,
    path: Path | str = "<config>",
    text: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Validate already-loaded YAML data; ``text``, the document it was loaded from, gives
    the problems their line numbers. Every problem is reported at once (``configcheck``).
    Secret values ({env: NAME}, {file: PATH}) are read from ``environ`` (default: this
    process's environment) and from files beside the config file."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping with 'settings:' and 'feeds:'")
    if raw.get("feeds") is None:
        raw = {**raw, "feeds": []}
    if raw.get("settings") is None:
        raw = {**raw, "settings": {}}
    try:
        model = ConfigModel.model_validate(raw)
    except ValidationError as exc:
        problems = configcheck.schema_problems(exc, raw, ConfigModel, Settings)
        problems += configcheck.cross_problems(raw)
        raise configcheck.config_error(path, problems, raw, text) from None
    problems = configcheck.cross_problems(raw)
    secrets = _Secrets(os.environ if environ is None else environ, Path(path).parent)
    http_proxy = None
    if model.settings.http_proxy is not None:
        http_proxy = secrets.proxy(model.settings.http_proxy, ("settings", "http_proxy"))
    global_rules = filter_rules(model.settings.filters, "settings.filters")
    specs = []
    proxied = http_proxy is not None
    for index, feed in enumerate(model.feeds):
        http = None
        if feed.http is not None:
            http = _http_options(feed.http, feed.url, secrets, ("feeds", index, "http"))
            proxied = proxied or http.proxy is not None
        specs.append(_feed_spec(feed, model.settings, global_rules, http))
    problems += secrets.problems
    if proxied and model.settings.http_transport == "httpx":
        problems.append(
            configcheck.Problem(
                ("settings", "http_transport"),
                "proxies (settings.http_proxy, a feed's http.proxy) need http_transport: "
                "aiohttp (the default); the httpx transport takes no proxy",
            )
        )
    if problems:
        raise configcheck.config_error(path, problems, raw, text)
    return Config(
        path=Path(path) if isinstance(path, str) else path,
        settings=model.settings,
        feeds=tuple(specs),
        exports=tuple(model.exports),
        http_proxy=http_proxy,
    )


def _load_yaml(text: str) -> Any:
    """libyaml when PyYAML has it (9x faster: 40 ms for 2000 feeds instead of 370), read
    from its event stream for a plain document (see ``_load_plain_yaml``); on an error the
    pure-Python loader's message, which names what it expected."""
    fast = getattr(yaml, "CSafeLoader", None)
    if fast is not None:
        try:
            return _load_plain_yaml(text, fast)
        except _BadValue:
            raise  # with its line and column (the full loader would raise a bare ValueError)
        except yaml.YAMLError:
            # the same libyaml parser would fail the same way: straight to the message
            return yaml.safe_load(text)
        except (_NotPlain, RecursionError):
            pass
        try:
            return yaml.load(text, Loader=fast)
        except yaml.YAMLError:
            pass
    return yaml.safe_load(text)


class _BadValue(yaml.MarkedYAMLError):
    """A scalar that YAML reads as a date or number which cannot be built (2026-02-30)."""


class _NotPlain(Exception):
    """The document uses what only the full loader handles: anchors, aliases, merge keys,
    explicit tags, non-scalar keys, several documents."""


def _load_plain_yaml(text: str, loader_class: Any) -> Any:
    """``yaml.safe_load`` of a plain document, built straight from libyaml's events.

    The full loader first composes every node of the document, each with two position
    marks: 27 MB at its peak for a 10 000-feed file whose data takes 4.5 MB, memory the
    daemon's allocator keeps for good. Scalars are resolved and constructed by the safe
    loader itself, so values come out the same."""
    loader = loader_class(text)
    try:
        loader.get_event()  # stream start
        if loader.check_event(yaml.StreamEndEvent):
            return None  # an empty file
        loader.get_event()  # document start
        data = _plain_node(loader)
        loader.get_event()  # document end
        if not loader.check_event(yaml.StreamEndEvent):
            raise _NotPlain("several documents")
        return data
    finally:
        loader.dispose()


def _plain_node(loader: Any) -> Any:
    event: Any = loader.get_event()
    if isinstance(event, yaml.AliasEvent) or event.anchor is not None:
        raise _NotPlain("anchor or alias")
    if event.tag not in (None, "!"):
        raise _NotPlain("explicit tag")
    if isinstance(event, yaml.ScalarEvent):
        tag = loader.resolve(yaml.ScalarNode, event.value, event.implicit)
        construct = loader.yaml_constructors.get(tag)
        if construct is None or tag in ("tag:yaml.org,2002:merge", "tag:yaml.org,2002:value"):
            raise _NotPlain(tag)
        try:
            return construct(loader, yaml.ScalarNode(tag, event.value, style=event.style))
        except ValueError as exc:
            mark: Any = event.start_mark
            raise _BadValue(problem=f"{event.value!r}: {exc}", problem_mark=mark) from None
    if isinstance(event, yaml.SequenceStartEvent):
        items: list[Any] = []
        while not loader.check_event(yaml.SequenceEndEvent):
            items.append(_plain_node(loader))
        loader.get_event()
        return items
    if isinstance(event, yaml.MappingStartEvent):
        mapping: dict[Any, Any] = {}
        while not loader.check_event(yaml.MappingEndEvent):
            key = _plain_node(loader)
            if isinstance(key, list | dict):
                raise _NotPlain("a key that is not a scalar")
            mapping[key] = _plain_node(loader)
        loader.get_event()
        return mapping
    raise _NotPlain(type(event).__name__)


def load_config(
    path: str | Path | None = None,
    database_url: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Load the config file; ``--config``/``--database`` beat the environment beats the file."""
    env = os.environ if environ is None else environ
    file = Path(path or env.get(ENV_CONFIG) or DEFAULT_CONFIG)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        given = (
            "given by --config"
            if path
            else (f"given by {ENV_CONFIG}" if env.get(ENV_CONFIG) else "the default path")
        )
        raise ConfigError(
            f"{file}: config file not found (looked for {file.absolute()}, {given}); "
            f"name the file with --config PATH or the {ENV_CONFIG} environment variable"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: cannot read the config file ({exc})") from None
    try:
        raw = _load_yaml(text)
    except yaml.YAMLError as exc:
        raise configcheck.yaml_error(file, text, exc) from None
    except ValueError as exc:  # a value PyYAML recognised but could not build: 2026-02-30
        raise ConfigError(f"{file}: invalid YAML: {exc}") from None
    config = parse_config(raw, file, text, env)
    url = database_url or env.get(ENV_DATABASE_URL)
    if url:
        config = replace(config, settings=config.settings.model_copy(update={"database_url": url}))
    return config
