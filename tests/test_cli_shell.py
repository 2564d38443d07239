"""The command line in a shell: pipes that close early, help text, --version.

Real processes: ``aggregator`` piped into ``head -1``, which reads one line and exits
while the command is still writing (every output here is far larger than a pipe's
64 KB buffer, so the writer does meet the closed pipe)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from builders import paragraph, rss
from conftest import write_config
from httpserver import FixtureServer
from ingest import aggregator, run_once


def piped_into_head(*args: str, cwd: Path) -> tuple[int, str, bytes]:
    """Run ``aggregator ARGS | head -1``: the command's exit code, its standard error and
    the line head printed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGGREGATOR_")}
    env["COLUMNS"] = "200"
    errors = cwd / "stderr.txt"
    with errors.open("wb") as err:
        producer = subprocess.Popen(
            [sys.executable, "-m", "aggregator", *args],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
        )
        assert producer.stdout is not None
        head = subprocess.Popen(["head", "-1"], stdin=producer.stdout, stdout=subprocess.PIPE)
        producer.stdout.close()  # head is the only reader: when it exits, the pipe closes
        first, _ = head.communicate(timeout=120)
        code = producer.wait(timeout=120)
    return code, errors.read_text(encoding="utf-8"), first


def test_export_into_head_exits_0_quietly(server: FixtureServer, tmp_path: Path) -> None:
    items = [
        {
            "title": f"Story {i}",
            "link": f"http://x/{i}",
            "guid": str(i),
            "description": paragraph(i),
        }
        for i in range(400)
    ]
    url = server.add("/big.xml", rss("big", items))
    cfg = write_config(tmp_path / "feeds.yaml", [{"url": url}], full_text=False)
    db = tmp_path / "a.db"
    assert run_once(cfg, f"sqlite:///{db}").new_items == 400
    full = aggregator(
        "export", "--format", "jsonl", "--limit", "1000", "--database", f"sqlite:///{db}"
    )
    assert full.returncode == 0 and len(full.stdout) > 4 * 65536  # far more than a pipe holds
    code, errors, first = piped_into_head(
        "export",
        "--format",
        "jsonl",
        "--limit",
        "1000",
        "--database",
        f"sqlite:///{db}",
        cwd=tmp_path,
    )
    assert (code, errors) == (0, "")
    assert first.decode() == full.stdout.splitlines(keepends=True)[0]


def test_check_into_head_exits_0_quietly(tmp_path: Path) -> None:
    feeds = [{"url": f"https://h{i}.example/feed.xml", "name": f"Feed {i}"} for i in range(1200)]
    cfg = write_config(tmp_path / "feeds.yaml", feeds)
    code, errors, first = piped_into_head("check", "--config", str(cfg), cwd=tmp_path)
    assert (code, errors) == (0, "")
    assert first.decode().startswith(f"{cfg}: valid, 1200 feeds")


def test_version() -> None:
    from aggregator import __version__

    result = aggregator("--version")
    assert result.returncode == 0
    assert result.stdout == f"aggregator {__version__}\n"


def command_paths() -> list[tuple[str, ...]]:
    """Every command and group of the command line."""
    import typer.main

    from aggregator.cli import app

    paths: list[tuple[str, ...]] = [()]

    def walk(command: object, path: tuple[str, ...]) -> None:
        for name, sub in getattr(command, "commands", {}).items():
            paths.append((*path, name))
            walk(sub, (*path, name))

    walk(typer.main.get_command(app), ())
    return paths


TYPE_LABEL = re.compile(r"<(bool|str|int|float|path|list\[[^\]]*\]|[a-z]+ range|[a-z|]+)>")


@pytest.mark.parametrize("path", command_paths(), ids=lambda p: " ".join(p) or "aggregator")
def test_help_shows_no_internal_type_labels(path: tuple[str, ...]) -> None:
    result = aggregator(*path, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout
    assert TYPE_LABEL.findall(result.stdout) == [], result.stdout
