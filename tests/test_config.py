from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest
import yaml

from aggregator.config import _load_plain_yaml, _load_yaml, _NotPlain, load_config, parse_duration
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


PLAIN_DOCUMENTS = [
    "",
    "# only a comment\n",
    "feeds: []\n",
    "settings:\n  concurrency: 32\n  full_text: no\n  per_host_delay: 1.5s\n  user_agent: ~\n",
    "feeds:\n- url: https://a.example/feed\n  tags: [x, 'y', \"2\"]\n  interval: 30m\n"
    "- {url: 'https://b.example/rss?a=1&b=2', enabled: off, name: '010'}\n",
    "a: 2026-11-27\nb: 2026-11-27 10:00:00Z\nc: 0x1F\nd: 1_000\ne: .inf\nf: 'yes'\ng: yes\n",
    "list:\n- - nested\n  - [1, 2.5, -3]\n- {}\n- []\n- |\n  literal\n  block\n- >\n  folded\n  text\n",
    "42\n",
    "just text\n",
    "? complex\n: value\n",
    "empty_value:\nnull_value: null\ntilde: ~\n",
]
FULL_LOADER_DOCUMENTS = [
    "defaults: &d {interval: 30m}\nfeeds:\n- <<: *d\n  url: https://a.example/feed\n",
    "a: &x [1, 2]\nb: *x\n",
    "a: !!str 123\nb: !!int '7'\n",
    "? [a, b]\n: v\n",
    "a: 1\n---\nb: 2\n",
]


@pytest.mark.parametrize("text", PLAIN_DOCUMENTS + FULL_LOADER_DOCUMENTS)
def test_feeds_yaml_loads_as_safe_load_does(text: str) -> None:
    try:
        expected = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        with pytest.raises(yaml.YAMLError) as caught:
            _load_yaml(text)
        assert str(caught.value) == str(exc)
        return
    assert _load_yaml(text) == expected


@pytest.mark.parametrize("text", FULL_LOADER_DOCUMENTS)
def test_anchors_tags_and_several_documents_go_to_the_full_loader(text: str) -> None:
    loader = getattr(yaml, "CSafeLoader", None)
    if loader is None:
        pytest.skip("PyYAML without libyaml")
    with pytest.raises(_NotPlain):
        _load_plain_yaml(text, loader)


def test_a_large_feeds_yaml_loads_without_the_node_graph() -> None:
    """10 000 feeds: the loader's peak stays near the size of the data it returns (the
    node-composing loader peaked at about six times that, memory the daemon then keeps)."""
    if getattr(yaml, "CSafeLoader", None) is None:
        pytest.skip("PyYAML without libyaml")
    text = "settings:\n  concurrency: 64\nfeeds:\n" + "".join(
        f"- url: http://127.0.0.1:8080/s{i:05d}/feed.rss\n  name: s{i:05d}\n  tags: [farm]\n"
        for i in range(10_000)
    )
    tracemalloc.start()
    try:
        data = _load_yaml(text)
        kept, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert data == yaml.load(text, Loader=yaml.CSafeLoader)  # the node-composing C loader
    assert peak < 1.5 * kept, (kept, peak)


def test_a_date_that_does_not_exist_is_a_config_error_with_its_place(tmp_path: Path) -> None:
    path = write(tmp_path, "feeds:\n- url: https://a.example/feed\n  name: 2026-02-30\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == (
        f"{path}: invalid YAML at line 3, column 9: '2026-02-30': day is out of range for month"
    )


def problems_of(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    return str(info.value)


def test_a_schema_error_names_its_line_and_the_nearest_key(tmp_path: Path) -> None:
    message = problems_of(
        tmp_path,
        "settings:\n  concurrency: 4\nfeeds:\n  - url: https://a.example/f\n"
        "    name: A\n    intreval: 5m\n",
    )
    assert message == (
        f"{tmp_path / 'feeds.yaml'}, line 6: feed #1 (https://a.example/f), field 'intreval': "
        "unknown key (did you mean 'interval'?)"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("settings:\n  timeoutt: 5s\n", "line 2: field 'settings.timeoutt': unknown key (did "),
        ("feed:\n  - url: https://a.example/f\n", "line 1: field 'feed': unknown key (did you "),
        (
            "feeds:\n  - url: https://a.example/f\n    concurrency: 3\n",
            "line 3: feed #1 (https://a.example/f), field 'concurrency': unknown key "
            "('concurrency' is a setting: it goes under settings:)",
        ),
        (
            "settings:\n  http: {host: 127.0.0.1, prot: 80}\n",
            "line 2: field 'settings.http.prot': unknown key (did you mean 'port'?)",
        ),
        (
            "feeds:\n- url: https://a.example/f\n- name: no url\n  tags: [x]\n",
            "line 3: feed #2, field 'url': Field required",
        ),
        (
            "feeds:\n  - url: https://a.example/f\n    interval:\n      soon\n",
            "line 3: feed #1 (https://a.example/f), field 'interval': 'soon' is not a duration",
        ),
    ],
)
def test_schema_errors_have_lines(tmp_path: Path, text: str, expected: str) -> None:
    message = problems_of(tmp_path, text)
    assert message.startswith(str(tmp_path / "feeds.yaml")), message
    assert expected.split(": ", 1)[1] in message, message
    assert f"feeds.yaml, {expected.split(': ', 1)[0]}: " in message, message


def test_every_problem_is_listed_in_file_order(tmp_path: Path) -> None:
    message = problems_of(
        tmp_path,
        "settings:\n  timeoutt: 5s\nfeeds:\n  - url: https://a.example/f\n    interval: soon\n"
        "  - url: ftp://b.example/x\n    colour: red\n",
    )
    assert "more problem" not in message
    assert message.splitlines() == [
        f"{tmp_path / 'feeds.yaml'}: 4 problems:",
        "  line 2: field 'settings.timeoutt': unknown key (did you mean 'timeout'?)",
        "  line 5: feed #1 (https://a.example/f), field 'interval': 'soon' is not a duration "
        "(use e.g. 30s, 15m, 2h, 1d)",
        "  line 6: feed #2 (ftp://b.example/x), field 'url': 'ftp://b.example/x' is not an "
        "http(s) URL with a host",
        "  line 7: feed #2 (ftp://b.example/x), field 'colour': unknown key "
        "(known keys: url, name, tags, interval, full_text, enabled, type, selectors, "
        "filters, http, retention)",
    ]


@pytest.mark.parametrize(
    "text",
    [
        "feeds:\n\t- url: https://a.example/f\n",
        "feeds:\n  - url: https://a.example/f\n\t  name: A\n",
        "settings:\n  concurrency: 4\n\tfull_text: no\n",
    ],
)
def test_a_tab_says_use_spaces_with_its_line(tmp_path: Path, text: str) -> None:
    message = problems_of(tmp_path, text)
    line = next(n for n, row in enumerate(text.splitlines(), 1) if "\t" in row)
    assert message.startswith(f"{tmp_path / 'feeds.yaml'}: invalid YAML at line {line}, ")
    assert message.endswith("a tab character; YAML indents with spaces only: use spaces")


def test_missing_file_says_where_it_looked_and_how_to_point_elsewhere(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as flag:
        load_config(tmp_path / "nope.yaml", environ={})
    message = str(flag.value)
    assert str(tmp_path / "nope.yaml") in message and "given by --config" in message
    assert "--config PATH" in message and "AGGREGATOR_CONFIG" in message
    env = {"AGGREGATOR_CONFIG": str(tmp_path / "env.yaml")}
    with pytest.raises(ConfigError, match=r"env\.yaml, given by AGGREGATOR_CONFIG"):
        load_config(None, environ=env)


def test_one_feed_under_several_spellings_and_repeated_names(tmp_path: Path) -> None:
    message = problems_of(
        tmp_path,
        "feeds:\n"
        "  - url: https://a.example/feed.xml\n    name: A\n"
        "  - url: https://a.example/feed.xml/\n"
        "  - url: HTTP://www.A.example/feed.xml\n"
        "  - url: https://b.example/rss\n    name: A\n"
        "  - url: https://a.example/feed.xml?page=2\n",
    )
    assert message.splitlines()[1:] == [
        "  line 4: feed #2 (https://a.example/feed.xml/), field 'url': duplicate of feed #1 "
        "(https://a.example/feed.xml, line 2), spelled differently",
        "  line 5: feed #3 (HTTP://www.A.example/feed.xml), field 'url': duplicate of feed #1 "
        "(https://a.example/feed.xml, line 2), spelled differently",
        "  line 7: feed #4 (https://b.example/rss), field 'name': duplicate name 'A': also the "
        "name of feed #1 (https://a.example/feed.xml, line 2)",
    ]


def test_repeated_export_names_name_both(tmp_path: Path) -> None:
    message = problems_of(
        tmp_path,
        "exports:\n"
        "  - {name: daily, format: atom, path: a.xml, schedule: '0 7 * * *'}\n"
        "  - {name: daily, format: rss, path: b.xml, schedule: '0 8 * * *'}\n",
    )
    assert message.endswith(
        "feeds.yaml, line 3: export #2 (daily), field 'name': duplicate of export #1 (daily, line 2)"
    )


def test_a_scheduled_exports_since_and_until_out_of_range_are_config_errors(
    tmp_path: Path,
) -> None:
    """Caught at load, with the line, rather than failing the export at its first run."""
    message = problems_of(
        tmp_path,
        "exports:\n"
        "  - {name: a, format: atom, path: a.xml, schedule: '0 7 * * *', since: '0001-01-01'}\n"
        "  - {name: b, format: atom, path: b.xml, schedule: '0 7 * * *', since: 5000000d}\n"
        "  - {name: c, format: atom, path: c.xml, schedule: '0 7 * * *', until: '9999-12-31'}\n"
        "  - {name: d, format: atom, path: d.xml, schedule: '0 7 * * *', since: 7d,"
        " until: '2030-01-01T00:00:00+02:00'}\n",
    )
    lines = message.splitlines()[1:]
    assert lines == [
        "  line 2: export #1 (a), field 'since': '0001-01-01' is out of range: use a date "
        "between 0001-01-03 and 9999-12-29 (UTC)",
        "  line 3: export #2 (b), field 'since': '5000000d' reaches back before 0001-01-03",
        "  line 4: export #3 (c), field 'until': '9999-12-31' is out of range: use a date "
        "between 0001-01-03 and 9999-12-29 (UTC)",
    ]
