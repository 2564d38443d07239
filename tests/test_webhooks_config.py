"""``webhooks:`` in feeds.yaml: validation with lines, secret references (``{env}``/``{file}``,
read as the per-feed HTTP options' are: ``configopts.Secrets``)."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest

from aggregator.config import load_config
from aggregator.errors import ConfigError
from aggregator.records import DEFAULT_EVENTS
from aggregator.secret import Secret
from ingest import aggregator

CONFIG = """\
settings:
  allow_private_networks: [127.0.0.0/8]
feeds:
  - url: https://news.example.org/feed.xml
    name: News
    tags: [peru]
webhooks:
  - url: https://hooks.example.org/aggregator
    events: [story.new, story.sources_reached, feed.failing, feed.recovered, feed.retired]
    sources_reached: 3
    secret: {env: HOOK_SECRET}
    tags: [peru]
  - url: https://other.example.org/hook
    secret: {file: hook.secret}
    feeds: [News]
"""


def test_the_contract_example_loads(tmp_path: Path) -> None:
    (tmp_path / "hook.secret").write_text("from a file\n")
    path = tmp_path / "feeds.yaml"
    path.write_text(CONFIG)
    config = load_config(path, environ={"HOOK_SECRET": "whsec_c2VjcmV0"})
    first, second = config.webhooks
    assert first.url == "https://hooks.example.org/aggregator"
    assert first.events[0] == "story.new" and "item.new" not in first.events
    assert (first.sources_reached, first.tags) == (3, ("peru",))
    assert first.secret is not None and first.secret.reveal() == "whsec_c2VjcmV0"
    # a relative file is read from the config's folder, without its line break
    assert second.secret is not None and second.secret.reveal() == "from a file"
    assert second.events == DEFAULT_EVENTS and second.sources_reached == 2
    assert second.feeds == ("News",)
    # the value never shows in a repr (of the secret or of the whole config)
    assert "c2VjcmV0" not in repr(config) and "from a file" not in repr(config)
    assert repr(first.secret) == "Secret(env HOOK_SECRET)"


def test_every_webhook_problem_is_reported_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "feeds.yaml"
    path.write_text(
        CONFIG.replace("feed.retired]", "feed.retierd]")
        + "  - url: https://hooks.example.org/aggregator\n"
        + "    feeds: [Nowhere]\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    message = str(caught.value)
    assert "3 problems" in message
    assert "line 9: webhook #1 (https://hooks.example.org/aggregator), field 'events.4'" in message
    assert (
        "line 16: webhook #3 (https://hooks.example.org/aggregator), field 'url': duplicate of webhook #1, line 8"
        in message
    )
    assert (
        "line 17: webhook #3 (https://hooks.example.org/aggregator), field 'feeds': no feed has the URL or name 'Nowhere'"
        in message
    )


def test_a_secret_that_cannot_be_read_names_the_variable_or_file(tmp_path: Path) -> None:
    path = tmp_path / "feeds.yaml"
    path.write_text(CONFIG)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    message = str(caught.value)
    assert (
        "line 11: webhook #1 (https://hooks.example.org/aggregator), field 'secret': environment variable HOOK_SECRET is not set"
        in message
    )
    assert (
        f"line 14: webhook #2 (https://other.example.org/hook), field 'secret': file {tmp_path / 'hook.secret'} does not exist"
        in message
    )
    (tmp_path / "hook.secret").write_text("x")
    with pytest.raises(ConfigError, match="must be base64 after 'whsec_'"):
        load_config(path, environ={"HOOK_SECRET": "whsec_not base64!"})


def test_check_exits_2_with_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "feeds.yaml"
    path.write_text(CONFIG)
    done = aggregator("check", "--config", str(path))
    assert done.returncode == 2
    assert "HOOK_SECRET is not set" in done.stderr and "Traceback" not in done.stderr


def test_secret_references(tmp_path: Path) -> None:
    """A webhook's secret: a plain string, a variable or a file (surrounding whitespace
    stripped); what cannot be read is a config error naming the variable or the file,
    never a value; the value never shows, and it survives pickling (the writer process)."""
    hook = "webhooks:\n  - url: https://hooks.example.org/a\n    secret: {ref}\n"
    path = tmp_path / "feeds.yaml"
    (tmp_path / "s.txt").write_text("  s3cret \n")
    for ref, expected in (("plain", "plain"), ("{env: X}", "v"), ("{file: s.txt}", "s3cret")):
        path.write_text(hook.format(ref=ref))
        (spec,) = load_config(path, environ={"X": "v"}).webhooks
        assert spec.secret is not None and spec.secret.reveal() == expected
    for ref, problem in (
        ("{env: X}", "environment variable X is not set"),
        ("{env: E}", "environment variable E is empty"),
        ("{file: none.txt}", "does not exist"),
    ):
        path.write_text(hook.format(ref=ref))
        with pytest.raises(ConfigError, match=re.escape(problem)):
            load_config(path, environ={"E": ""})
    secret = Secret("s3cret", "value")
    assert "s3cret" not in f"{secret} {secret!r} {[secret]}"
    assert pickle.loads(pickle.dumps(secret)) == secret  # crosses to the writer process
    assert secret != Secret("other", "value")
