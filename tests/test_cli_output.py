"""What the commands print, in a terminal (a real pseudo-terminal) and into a pipe: tables
that keep URLs whole, ``feeds list`` with names and UTC times, the one-line ``stories``
view, the ``run --once`` summary on stdout with the log on stderr, config errors."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from builders import article_page, rss
from conftest import write_config
from httpserver import FixtureServer
from ingest import aggregator

LONG = "/environment/climate-crisis/rss/a-feed-with-a-rather-long-path/and-some-more/feed.xml"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def in_terminal(*args: str, columns: int, cwd: Path) -> str:
    """Run ``aggregator ARGS`` on a pseudo-terminal ``columns`` wide; what it showed."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGGREGATOR_")}
    env.update(COLUMNS=str(columns), TERM="xterm", NO_COLOR="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "aggregator", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=cwd,
        env=env,
        close_fds=True,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the terminal's other side is closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    assert proc.wait(timeout=120) == 0
    return ANSI.sub("", b"".join(chunks).decode("utf-8").replace("\r\n", "\n"))


def column_text(output: str, column: int) -> str:
    """The cells of a boxed table's ``column`` (0-based), joined over rows and lines."""
    cells = []
    for line in output.splitlines():
        if line.startswith("│"):
            cells.append(line.split("│")[column + 1].strip())
    return "".join(cells)


def long_config(tmp_path: Path) -> Path:
    return write_config(
        tmp_path / "feeds.yaml",
        [
            {
                "url": "https://www.news.example" + LONG,
                "name": "The Daily Example climate crisis section",
                "tags": ["climate", "news", "world"],
            },
            {"url": "https://b.example/rss", "name": "B"},
        ],
    )


def test_check_keeps_urls_whole_in_a_terminal(tmp_path: Path) -> None:
    cfg = long_config(tmp_path)
    shown = in_terminal("check", "--config", str(cfg), columns=100, cwd=tmp_path)
    assert "…" not in shown
    # the URL may fold onto a second line, but every character is there, in order
    assert column_text(shown, 1) == "https://www.news.example" + LONG + "https://b.example/rss"
    # while the name, not the URL, gives up its width first
    name_width = len(next(line for line in shown.splitlines() if "│ 1 " in line).split("│")[3])
    assert name_width < len("The Daily Example climate crisis section")


def test_check_into_a_pipe_prints_whole_rows(tmp_path: Path) -> None:
    cfg = long_config(tmp_path)
    env_narrow = aggregator("check", "--config", str(cfg), cwd=tmp_path)
    assert env_narrow.returncode == 0
    row = next(line for line in env_narrow.stdout.splitlines() if "news.example" in line)
    assert "https://www.news.example" + LONG in row
    assert "The Daily Example climate crisis section" in row and "climate, news, world" in row


@pytest.fixture
def polled(server: FixtureServer, tmp_path: Path) -> tuple[Path, str]:
    """Three feeds carrying one story, a feed that parses with a problem, a 404; polled
    once. (config path, database URL)"""
    page = server.add("/news/harbour", article_page("Harbour budget", 1), content_type="text/html")

    def item(guid: str) -> list[dict[str, str]]:
        return [{"title": "Council approves harbour budget", "link": page, "guid": guid}]

    feeds: list[dict[str, object]] = [
        {"url": server.add(f"/{name}.xml", rss(name, item(name))), "name": f"{name.title()} News"}
        for name in ("alpha", "beta", "gamma")
    ]
    bozo = server.add(
        "/bozo.xml",
        '<?xml version="1.0"?><rss version="2.0"><channel><title>Bozo</title><item>'
        "<title>Loose</title><link>http://x.example/a?b=1&c=2</link><guid>z</guid>"
        "</item></channel></rss>",
    )
    feeds += [{"url": bozo, "name": "Bozo"}, {"url": server.url("/gone.xml")}]
    cfg = write_config(tmp_path / "feeds.yaml", feeds, full_text=False)
    db = f"sqlite:///{tmp_path / 'a.db'}"
    result = aggregator("run", "--once", "--config", str(cfg), "--database", db, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    # the summary on stdout, nothing else; the JSON log on stderr, nothing else
    assert "feeds polled" in result.stdout and "{" not in result.stdout
    logged = [json.loads(line) for line in result.stderr.splitlines()]
    assert sum(1 for line in logged if line["event"] == "poll") == 5
    # the feed read with problems is in the summary, with its problem
    notices = result.stdout.split("feeds read with problems", 1)[1]
    row = next(line for line in notices.splitlines() if "bozo.xml" in line)
    assert "feed parsed with problems: XML is not well-formed" in row
    return cfg, db


def test_feeds_list_has_names_and_utc_times(polled: tuple[Path, str], tmp_path: Path) -> None:
    cfg, db = polled
    result = aggregator("feeds", "list", "--config", str(cfg), "--database", db, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    header = next(line for line in result.stdout.splitlines() if "url" in line)
    assert [c.strip() for c in header.strip("┃ ").split("┃")][:3] == ["id", "name", "url"]
    alpha = next(line for line in result.stdout.splitlines() if "alpha.xml" in line)
    cells = [c.strip() for c in alpha.strip("│ ").split("│")]
    assert cells[1] == "Alpha News"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", cells[5]), cells  # last polled
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", cells[8]), cells  # next check


def test_stories_one_line_each_by_default(polled: tuple[Path, str], tmp_path: Path) -> None:
    cfg, db = polled
    args = ("stories", "--min-sources", "1", "--config", str(cfg), "--database", db)
    lines = aggregator(*args, cwd=tmp_path).stdout.splitlines()
    assert lines[0].split() == ["story", "feeds", "first", "seen", "(UTC)", "title", "from"]
    assert len(lines) == 3  # the header and one line for each of the two stories
    harbour = next(line for line in lines if "harbour" in line)
    assert re.search(
        r"^\s*\d+\s+3\s+\d{4}-\d\d-\d\d \d\d:\d\d\s+Council approves harbour budget\s+"
        r"Alpha News, Beta News, Gamma News$",
        harbour,
    ), harbour
    shown = in_terminal(*args, columns=60, cwd=tmp_path)
    assert len(shown.strip().splitlines()) == 3  # cut to the line, not wrapped
    assert max(len(line) for line in shown.splitlines()) <= 60
    detailed = aggregator(*args, "--details", cwd=tmp_path).stdout
    assert detailed.count("story ") == 2  # a titled table per story
    assert "canonical_url" in detailed and "gone" not in detailed


def test_duplicate_feeds_are_a_config_error_naming_both(tmp_path: Path) -> None:
    cfg = tmp_path / "feeds.yaml"
    cfg.write_text(
        "feeds:\n  - url: https://a.example/feed.xml\n    name: A\n"
        "  - url: HTTP://a.example/feed.xml/\n    name: A\n",
        encoding="utf-8",
    )
    for command in (("check",), ("run", "--once")):
        result = aggregator(*command, "--config", str(cfg), cwd=tmp_path)
        assert result.returncode == 2
        assert result.stderr.splitlines() == [
            f"error: {cfg}: 2 problems:",
            "  line 4: feed #2 (HTTP://a.example/feed.xml/), field 'url': duplicate of feed #1 "
            "(https://a.example/feed.xml, line 2), spelled differently",
            "  line 5: feed #2 (HTTP://a.example/feed.xml/), field 'name': duplicate name 'A': "
            "also the name of feed #1 (https://a.example/feed.xml, line 2)",
        ]
