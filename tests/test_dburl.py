"""Database URLs as people write them: `postgres://` works, a bare path or a scheme we do
not support gets the right form instead of a driver's import error, and the read-only
commands never create an empty database at a mistyped path."""

from __future__ import annotations

from pathlib import Path

import pytest

from aggregator.errors import StoreError
from aggregator.store import open_store
from conftest import write_config
from ingest import aggregator

READ_COMMANDS = [
    ["export", "-f", "jsonl"],
    ["serve", "--port", "0"],
    ["stories", "--since", "1d"],
    ["feeds", "list"],
]
FORMS = ("sqlite:///path/to.db", "postgresql://user@host/db")


def clean_error(stderr: str) -> None:
    for noise in ("Traceback", "MySQLdb", "Can't load plugin", "No module named"):
        assert noise not in stderr, stderr


@pytest.mark.postgres
def test_postgres_scheme_is_postgresql(pg_url: str, tmp_path: Path) -> None:
    url = pg_url.replace("postgresql+psycopg://", "postgres://")
    up = aggregator("db", "upgrade", "--database", url, cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    store = open_store(url)
    try:
        assert store.dialect == "postgresql"
        assert store.counts()["feeds"] == 0
    finally:
        store.close()
    listed = aggregator("export", "-f", "jsonl", "--database", url, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr


@pytest.mark.parametrize("command", [*READ_COMMANDS, ["run", "--once"], ["db", "upgrade"]])
def test_a_bare_path_gets_the_right_form(command: list[str], tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "feeds.yaml", [])
    done = aggregator(*command, "-c", str(cfg), "--database", "data/news.db", cwd=tmp_path)
    assert done.returncode == 3, done
    assert "'data/news.db' is not a database URL" in done.stderr
    assert "sqlite:///data/news.db" in done.stderr and "postgresql://user@host/db" in done.stderr
    clean_error(done.stderr)
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    "url", ["mysql://u@localhost/news", "sqlite3:///news.db", "postgresql+asyncpg://h/db"]
)
def test_an_unsupported_scheme_gets_the_right_forms(url: str, tmp_path: Path) -> None:
    done = aggregator("export", "-f", "jsonl", "--database", url, cwd=tmp_path)
    assert done.returncode == 3, done
    assert "unsupported database URL scheme" in done.stderr
    assert all(form in done.stderr for form in FORMS)
    clean_error(done.stderr)
    with pytest.raises(StoreError, match="unsupported database URL scheme"):
        open_store(url)


def test_a_password_never_reaches_the_message(tmp_path: Path) -> None:
    done = aggregator("export", "-f", "jsonl", "-d", "mysql://u:s3cret@h/db", cwd=tmp_path)
    assert done.returncode == 3 and "s3cret" not in done.stderr


@pytest.mark.parametrize("command", READ_COMMANDS)
def test_read_commands_never_create_a_database_at_a_mistyped_path(
    command: list[str], tmp_path: Path
) -> None:
    cfg = write_config(tmp_path / "feeds.yaml", [])
    missing = tmp_path / "dta" / "aggregator.db"
    done = aggregator(*command, "-c", str(cfg), "--database", f"sqlite:///{missing}", cwd=tmp_path)
    assert done.returncode == 3, done
    assert (
        f"no database at {missing} (run `aggregator db upgrade` or `aggregator run` first)"
        in " ".join(done.stderr.split())
    )
    clean_error(done.stderr)
    assert not missing.exists() and not missing.parent.exists()


def test_writing_commands_still_create_a_new_database(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "feeds.yaml", [])
    new = tmp_path / "new" / "aggregator.db"
    done = aggregator("run", "--once", "-c", str(cfg), "--database", f"sqlite:///{new}")
    assert done.returncode == 0, done.stderr
    assert new.exists()
    listed = aggregator("feeds", "list", "-c", str(cfg), "--database", f"sqlite:///{new}")
    assert listed.returncode == 0, listed.stderr
