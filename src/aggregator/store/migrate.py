"""Schema migrations (Alembic, ``migrations/``): ``MigrateMixin`` of ``Store``.

Alembic, Mako and Pygments (~14 MB) load only when something is to be migrated: the
start-up check reads the head revision from the migration files (``head_revisions``), and
``upgrade_in_child`` runs Alembic in a child process, so a daemon that runs for months
never holds them.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from ..errors import StoreError
from . import faults
from .database import Database
from .writerlock import writer_lock_path

MIGRATION_LOCK_ID = 7_246_311  # pg_advisory_lock key for `db upgrade`
MIGRATION_TIMEOUT = 3600.0  # seconds a child process may take to migrate (upgrade_in_child)
# the child of ``upgrade_in_child``: the URL comes on stdin (it may hold a password), a
# StoreError's message goes to stderr as the last line
_CHILD_UPGRADE = """
import sys
from aggregator.errors import StoreError
from aggregator.store import open_store
try:
    store = open_store(sys.stdin.read())
    store.upgrade()
    store.close()
except StoreError as exc:
    print(exc, file=sys.stderr)
    sys.exit(3)
"""


def _migrations_dir() -> Path:
    packaged = Path(__file__).resolve().parent.parent / "_migrations"
    if (packaged / "env.py").exists():
        return packaged
    source = Path(__file__).resolve().parents[3] / "migrations"
    if (source / "env.py").exists():
        return source
    raise StoreError("the Alembic migrations folder is missing from this installation")


def head_revisions(folder: Path | None = None) -> set[str] | None:
    """The migrations' head revision ids, read from the files (without importing Alembic,
    which costs ~40 MB and a few hundred ms at every start when nothing is to be done);
    None when a file cannot be read that way (Alembic then decides)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in ((folder or _migrations_dir()) / "versions").glob("*.py"):
        found: dict[str, object] = {}
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                target, value = node.targets[0], node.value
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                target, value = node.target, node.value
            else:
                continue
            if isinstance(target, ast.Name) and target.id in ("revision", "down_revision"):
                try:
                    found[target.id] = ast.literal_eval(value)
                except ValueError:
                    return None
        revision, parent = found.get("revision"), found.get("down_revision")
        if not isinstance(revision, str):
            return None
        revisions.add(revision)
        if isinstance(parent, str):
            parents.add(parent)
        elif isinstance(parent, tuple | list):
            parents.update(str(p) for p in parent)
        elif parent is not None:
            return None
    heads = revisions - parents
    return heads if len(heads) == 1 else None


class MigrateMixin(Database):
    def upgrade(self, revision: str = "head") -> None:
        """Apply every Alembic migration up to ``revision`` (safe when several workers
        start at once)."""
        if revision == "head" and self._at_head():
            return
        self._migrate("upgrade", revision)

    def upgrade_in_child(self) -> None:
        """``upgrade``, run by a child process when there is anything to do: Alembic,
        Mako and Pygments (~14 MB) then never load into a daemon that runs for months.
        In-memory and URI SQLite databases are migrated in this process (a child would
        see another database)."""
        if self._at_head():
            return
        if self.dialect == "sqlite" and writer_lock_path(self.engine.url.database) is None:
            self._migrate("upgrade", "head")
            return
        url = self.engine.url.render_as_string(hide_password=False)
        try:
            done = subprocess.run(
                [sys.executable, "-c", _CHILD_UPGRADE],
                input=url,
                capture_output=True,
                text=True,
                timeout=MIGRATION_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise StoreError(f"cannot migrate the database: {exc}") from None
        if done.returncode != 0:
            # the child's StoreError message, or an unexpected error's traceback's last line
            lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
            raise StoreError(lines[-1])

    def downgrade(self, revision: str) -> None:
        """Undo the migrations after ``revision`` (for tests and rollbacks)."""
        self._migrate("downgrade", revision)

    def _at_head(self) -> bool:
        """Is the database at the migrations' head already?"""
        try:
            with self.engine.connect() as conn:
                current = {
                    r[0] for r in conn.execute(text("SELECT version_num FROM alembic_version"))
                }
        except SQLAlchemyError:
            return False  # no version table yet (a new database) or unreadable: migrate
        heads = head_revisions()
        return heads is not None and bool(current) and current == heads

    def _migrate(self, direction: str, revision: str) -> None:
        from alembic import command
        from alembic.config import Config as AlembicConfig
        from alembic.util.exc import CommandError

        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(_migrations_dir()))
        # ConfigParser interpolation: a literal % must be doubled
        url = self.engine.url.render_as_string(hide_password=False).replace("%", "%%")
        cfg.set_main_option("sqlalchemy.url", url)
        try:
            # SQLite: one migrating process at a time, holding the write lock from its first
            # read of alembic_version (a deferred transaction that read first could not
            # write after another process's commit: "database is locked" at once)
            with self.write_lock, self.write_engine.connect() as conn:
                conn.execution_options(sqlite_immediate=True)
                if self.dialect == "postgresql":
                    conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_ID})
                    conn.commit()
                try:
                    cfg.attributes["connection"] = conn
                    getattr(command, direction)(cfg, revision)
                    conn.commit()
                finally:
                    if self.dialect == "postgresql":
                        conn.execute(
                            text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_ID}
                        )
                        conn.commit()
        except SQLAlchemyError as exc:
            raise faults.store_error(exc, "cannot migrate the database") from None
        except CommandError as exc:  # e.g. a revision this version does not know (newer)
            raise StoreError(f"cannot migrate the database: {exc}") from None
