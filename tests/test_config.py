from __future__ import annotations

from pathlib import Path

import pytest

from aggregator.config import load_config, parse_duration
from aggregator.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "feeds.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("15m", 900),
        ("2h", 7200),
        ("1h30m", 5400),
        ("45s", 45),
        ("1d", 86400),
        (90, 90),
        ("0.5s", 0.5),
        ("1w", 604800),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["fast", "15 minutes", "-5m", "", "m15", True])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_full_config_loads(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
settings:
  default_interval: 20m
  full_text: false
  per_host_delay: 2s
  allow_private_networks: [10.0.0.0/8, "::1/128"]
feeds:
  - url: https://example.org/feed.xml
    name: Example
    tags: [news, world]
    interval: 1h
  - url: https://example.net/rss
    full_text: true
    enabled: false
""",
    )
    config = load_config(path, environ={})
    assert config.settings.default_interval == 1200
    assert config.settings.per_host_delay == 2
    assert config.settings.allow_private_networks == ("10.0.0.0/8", "::1/128")
    first, second = config.feeds
    assert first.name == "Example" and first.tags == ("news", "world") and first.interval == 3600
    assert first.full_text is False  # inherits the setting
    assert second.full_text is True and second.enabled is False and second.interval is None
    assert config.database_url == "sqlite:///data/aggregator.db"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "feeds:\n  - url: https://a.example/f\n    colour: red\n",
            "feed #1 (https://a.example/f), field 'colour': unknown key",
        ),
        (
            "feeds:\n  - url: https://a.example/f\n  - url: https://a.example/f\n",
            "feed #2 (https://a.example/f), field 'url': duplicate of feed #1",
        ),
        (
            "feeds:\n  - url: https://a.example/f\n    interval: soon\n",
            "feed #1 (https://a.example/f), field 'interval': 'soon' is not a duration",
        ),
        (
            "feeds:\n  - url: https://a.example/f\n  - url: ftp://b.example/x\n",
            "feed #2 (ftp://b.example/x), field 'url': 'ftp://b.example/x' is not an http(s) URL",
        ),
        ("feeds:\n  - name: no url\n", "feed #1, field 'url': Field required"),
        ("settings:\n  default_interval: often\n", "field 'settings.default_interval'"),
        ("settings:\n  timeoutt: 5s\n", "field 'settings.timeoutt': unknown key"),
        ("settings:\n  allow_private_networks: [banana]\n", "'banana' is not a CIDR network"),
        ("feeds: [\n", "invalid YAML at line"),
        ("- just\n- a list\n", "the top level must be a mapping"),
    ],
)
def test_config_errors_name_file_feed_and_field(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    message = str(info.value)
    assert message.startswith(str(path)), message
    assert expected in message, message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml", environ={})


def test_precedence_flag_env_file(tmp_path: Path) -> None:
    path = write(tmp_path, "settings:\n  database_url: sqlite:///file.db\nfeeds: []\n")
    env = {"AGGREGATOR_DATABASE_URL": "sqlite:///env.db", "AGGREGATOR_CONFIG": str(path)}
    assert load_config(None, None, environ=env).database_url == "sqlite:///env.db"
    assert load_config(None, "sqlite:///flag.db", environ=env).database_url == "sqlite:///flag.db"
    assert load_config(path, environ={}).database_url == "sqlite:///file.db"


def test_empty_config_is_valid(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""), environ={})
    assert config.feeds == ()
