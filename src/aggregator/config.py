"""Load and validate ``feeds.yaml`` (plus environment) into frozen settings.

Every error names the file, the feed (by index and url) and the field.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, cast, get_args
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

from . import configcheck, configopts, filters
from .configopts import (
    FeedHttpModel,
    FilterRuleModel,
    SecretValue,
    filter_rules,
)
from .dates import QUERY_EARLIEST, QUERY_LATEST, in_query_range
from .errors import ConfigError
from .records import (
    DEFAULT_EVENTS,
    DEFAULT_SOURCES_REACHED,
    EVENT_TYPES,
    FeedSpec,
    FilterRule,
    FilterRules,
    HtmlSelectors,
    HttpOptions,
    Retention,
    WebhookSpec,
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


class HttpSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)


class WebSubSettings(BaseModel):
    """``settings.websub``: subscribe at the WebSub hubs feeds declare (docs/push.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # the public base of the callback URLs: a subscription's callback is
    # <callback_url>/<its id>, which must reach the HTTP face's /websub/<its id>
    callback_url: str
    lease_seconds: Duration = 10 * 86400.0  # the lease asked of the hub (it decides)
    poll_interval: Duration = 86400.0  # polling while a subscription is live (safety net)
    verify_timeout: Duration = 3600.0  # a request the hub has not verified by then failed

    @field_validator("callback_url")
    @classmethod
    def _callback(cls, value: str) -> str:
        value = _check_http_url(value)
        parts = urlsplit(value)
        if parts.query or parts.fragment:
            raise ValueError(f"{value!r}: a callback base takes no query or fragment")
        return value.rstrip("/")

    @field_validator("lease_seconds")
    @classmethod
    def _lease(cls, value: float) -> float:
        if not 60 <= value <= 365 * 86400:
            raise ValueError("must be from 1m to 365d")
        return value

    @field_validator("verify_timeout")
    @classmethod
    def _verify(cls, value: float) -> float:
        if value < 1:
            raise ValueError("must be at least 1s")
        return value


class RetentionModel(BaseModel):
    """``retention:`` in ``settings`` (every feed) or on a feed (its keys over the global
    ones; a key set to null turns that rule off for the feed). See ``retention.py``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    max_age: Duration | None = None  # items first seen longer ago are deleted
    max_items_per_feed: int | None = Field(None, ge=1)  # the newest N per feed are kept
    drop_text_after: Duration | None = None  # content, text and shingles cleared

    @field_validator("max_age", "drop_text_after")
    @classmethod
    def _positive(cls, value: float | None) -> float | None:
        if value is not None and value < 60:
            raise ValueError("must be at least 1m")
        return value

    def over(self, base: Retention | None) -> Retention | None:
        """This block's keys over ``base`` (None, or a rule that keeps everything: None)."""
        values: dict[str, float | int | None] = {
            "max_age": base.max_age if base else None,
            "max_items_per_feed": base.max_items_per_feed if base else None,
            "drop_text_after": base.drop_text_after if base else None,
        }
        for name in self.model_fields_set:
            values[name] = getattr(self, name)
        items = values["max_items_per_feed"]
        rule = Retention(
            max_age=values["max_age"],
            max_items_per_feed=None if items is None else int(items),
            drop_text_after=values["drop_text_after"],
        )
        return rule if rule.active else None


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
    # SQLite: story decisions planned in the pool against a read snapshot, checked by the
    # writer (ingest.plan); off: on 2 cores it costs CPU and memory for no speed-up
    plan_decisions: bool = False
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
    websub: WebSubSettings | None = None  # WebSub subscriptions (push); off when absent
    # webhook delivery (docs/push.md): the defaults are the documented contract; the
    # retry timings are settings so that tests (and impatient operators) can shorten them
    webhook_timeout: Duration = 10.0  # no answer within this long: the attempt failed
    webhook_retry_base: Duration = 30.0  # first retry after this; the wait doubles each time
    webhook_retry_max: Duration = 3600.0  # the longest wait between two attempts
    webhook_max_age: Duration = 86400.0  # a delivery still failing this long after it was due: dead
    webhook_wait: Duration = 30.0  # `run --once` waits at most this long for deliveries
    webhook_concurrency: int = Field(4, ge=1, le=64)  # deliveries in flight per process
    events_retention: Duration = 7 * 86400.0  # the daemon deletes finished events older than this
    retention: RetentionModel | None = None  # items deleted or slimmed by age and count
    retention_interval: Duration = 3600.0  # how often the daemon applies retention

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
        if self.webhook_timeout <= 0 or self.webhook_retry_base <= 0:
            raise ValueError("webhook_timeout and webhook_retry_base must be more than 0s")
        if self.retention_interval < 60:
            raise ValueError("retention_interval must be at least 1m")
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
    retention: RetentionModel | None = None  # over settings.retention

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
    """A duration before the run (``24h``) or an ISO 8601 date/timestamp, within the
    range every ``since``/``until`` must keep (``dates.QUERY_EARLIEST``…``QUERY_LATEST``),
    so a scheduled export cannot fail on it later, at its first run."""
    if value is None:
        return None
    span = f"{QUERY_EARLIEST.date().isoformat()} and {QUERY_LATEST.date().isoformat()}"
    try:
        seconds = parse_duration(value)
    except ValueError:
        pass
    else:
        # a duration reaching back before QUERY_EARLIEST from today is refused now
        if (
            not math.isfinite(seconds)
            or seconds > (datetime.now(UTC) - QUERY_EARLIEST).days * 86400
        ):
            raise ValueError(f"{value!r} reaches back before {QUERY_EARLIEST.date().isoformat()}")
        return value
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(
            f"{value!r} is neither a duration (e.g. 24h, 7d) nor an ISO 8601 timestamp"
        ) from None
    if not in_query_range(when if when.tzinfo else when.replace(tzinfo=UTC)):
        raise ValueError(f"{value!r} is out of range: use a date between {span} (UTC)")
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


EventType = Literal[
    "story.new",
    "story.sources_reached",
    "item.new",
    "feed.failing",
    "feed.recovered",
    "feed.retired",
    "feed.redirected",
]
assert set(get_args(EventType)) == set(EVENT_TYPES)


class WebhookModel(BaseModel):
    """One webhook subscription (``webhooks:``); see docs/push.md."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    url: str
    events: tuple[EventType, ...] = Field(cast(tuple[EventType, ...], DEFAULT_EVENTS), min_length=1)
    sources_reached: int = Field(DEFAULT_SOURCES_REACHED, ge=2, le=10_000)
    secret: SecretValue | None = None  # a plain string, {env: NAME} or {file: PATH}
    tags: tuple[str, ...] = ()
    feeds: tuple[str, ...] = ()

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _check_http_url(value)

    @field_validator("events", "tags", "feeds", mode="before")
    @classmethod
    def _listed(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value


class ConfigModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    settings: Settings = Field(default_factory=lambda: Settings())
    feeds: list[FeedModel] = Field(default_factory=list)
    exports: list[ExportModel] = Field(default_factory=list)
    webhooks: list[WebhookModel] = Field(default_factory=list)


@dataclass(frozen=True)
class Config:
    path: Path | None
    settings: Settings
    feeds: tuple[FeedSpec, ...]
    exports: tuple[ExportModel, ...] = ()
    http_proxy: Secret | None = None  # settings.http_proxy, read (it may hold a password)
    webhooks: tuple[WebhookSpec, ...] = ()

    @property
    def database_url(self) -> str:
        return self.settings.database_url

    @property
    def retention(self) -> Retention | None:
        """``settings.retention``: the rule of feeds that are no longer configured."""
        model = self.settings.retention
        return None if model is None else model.over(None)


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
    retention = settings.retention.over(None) if settings.retention is not None else None
    if model.retention is not None:
        retention = model.retention.over(retention)
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
        retention=retention,
    )


def _webhooks(
    models: list[WebhookModel], secrets: configopts.Secrets
) -> tuple[tuple[WebhookSpec, ...], list[configcheck.Problem]]:
    """The subscriptions with their secrets read (``configopts.Secrets``: a relative
    ``{file: PATH}`` is taken from the config file's folder; one that cannot be read is
    a problem there)."""
    specs: list[WebhookSpec] = []
    problems: list[configcheck.Problem] = []
    for index, model in enumerate(models):
        secret = None
        if model.secret is not None:
            secret = secrets.read(model.secret, ("webhooks", index, "secret"))
            if secret is not None:
                value = secret.reveal()
                try:  # a Standard Webhooks secret: base64 after the prefix
                    if value.startswith("whsec_"):
                        base64.b64decode(value.removeprefix("whsec_"), validate=True)
                except binascii.Error:
                    problems.append(
                        configcheck.Problem(
                            ("webhooks", index, "secret"),
                            f"a whsec_ secret ({secret.source}) must be base64 after 'whsec_'",
                        )
                    )
        specs.append(
            WebhookSpec(
                url=model.url,
                events=tuple(dict.fromkeys(model.events)),
                sources_reached=model.sources_reached,
                secret=secret,
                tags=model.tags,
                feeds=model.feeds,
            )
        )
    return tuple(specs), problems


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
    secrets = configopts.Secrets(os.environ if environ is None else environ, Path(path).parent)
    http_proxy = None
    if model.settings.http_proxy is not None:
        http_proxy = secrets.proxy(model.settings.http_proxy, ("settings", "http_proxy"))
    global_rules = filter_rules(model.settings.filters, "settings.filters")
    specs = []
    proxied = http_proxy is not None
    for index, feed in enumerate(model.feeds):
        http = None
        if feed.http is not None:
            http = configopts.http_options(feed.http, feed.url, secrets, ("feeds", index, "http"))
            proxied = proxied or http.proxy is not None
        specs.append(_feed_spec(feed, model.settings, global_rules, http))
    webhooks, webhook_problems = _webhooks(model.webhooks, secrets)
    problems += secrets.problems + webhook_problems
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
        webhooks=webhooks,
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
