"""Writing an export to a path: atomically for files, straight into pipes and devices.

A regular file (or a new one) is written to a temporary file in its folder, synced, then
renamed over it: readers (a web server, a sync job) see the old file or the new one,
never half of one, and a failed export leaves the previous file in place. A symbolic link
is followed: its target is replaced the same way, in the target's folder, and the link
stays a link. A FIFO or a character device (``/dev/null``, a terminal, ``/dev/stdout`` on a
pipe) is written straight into, never renamed over (as root, ``-o /dev/stdout`` would
otherwise replace the system's device node), and so is a path that names an open file
descriptor (``/dev/stdout``, ``/dev/fd/N``, ``/proc/self/fd/N``): a shell's ``>> log``
behind it is appended to, not replaced. Other special files (sockets, block devices,
directories) are refused.

Temporary files are named ``.<name>.aggregator-<pid>-<random>.tmp``. One that a killed
export left behind (``kill -9`` gives no chance to remove it) is removed by a later
export to the same folder once it is ``STALE_AFTER`` seconds old; other files, and ours
that are younger (another export may be writing it now), are left alone.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

DEFAULT_MODE = 0o644
TEMP_MARK = ".aggregator-"  # in every temporary file's name, with the pid after it
STALE_AFTER = 3600.0  # seconds without a write after which a temporary file is stale
_OURS = re.compile(r"^\..+\.aggregator-\d+-[A-Za-z0-9_]+\.tmp$")


class UnwritableTarget(OSError):
    """The output path is a kind of file an export cannot be written to."""


def write_atomic(path: str | Path, chunks: Iterable[str], *, encoding: str = "utf-8") -> int:
    """Write ``chunks`` to ``path`` (see the module's doc); returns the bytes written.
    A replaced file keeps its mode (and, where allowed, its owner); a new one is 0644."""
    given = Path(path)
    try:
        found = given.stat()  # follows symbolic links
    except FileNotFoundError:
        found = None
    if found is not None and not stat.S_ISREG(found.st_mode):
        if stat.S_ISFIFO(found.st_mode) or stat.S_ISCHR(found.st_mode):
            return _write_through(given, chunks, encoding)
        kind = "a directory" if stat.S_ISDIR(found.st_mode) else "a special file"
        raise UnwritableTarget(
            f"{given} is {kind}: write to a regular file, a FIFO or a character device"
        )
    if found is not None and _names_a_descriptor(given):
        return _write_through(given, chunks, encoding)
    # a symbolic link (or a chain of them) is replaced at its target: the link stays
    target = Path(os.path.realpath(given)) if given.is_symlink() else given
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target.parent)
    return _replace(target, found, chunks, encoding)


def _names_a_descriptor(path: Path) -> bool:
    """Does ``path`` (or a link on the way to its target) name an open file descriptor:
    ``/dev/stdout``, ``/dev/fd/1``, ``/proc/self/fd/1``?"""
    current = Path(os.path.abspath(path))
    for _hop in range(40):
        text = str(current)
        if text.startswith("/dev/fd/") or (text.startswith("/proc/") and "/fd/" in text):
            return True
        if not current.is_symlink():
            return False
        current = Path(os.path.abspath(current.parent / os.readlink(current)))
    return False


def _write_through(path: Path, chunks: Iterable[str], encoding: str) -> int:
    """Write into a FIFO, a character device or an open descriptor as it is (no temporary
    file, no rename; appended to, so that a shell's ``>>`` keeps what was there)."""
    written = 0
    with open(path, "ab", buffering=0) as out:
        for chunk in chunks:
            data = chunk.encode(encoding)
            out.write(data)
            written += len(data)
    return written


def _replace(
    target: Path, found: os.stat_result | None, chunks: Iterable[str], encoding: str
) -> int:
    mode = stat.S_IMODE(found.st_mode) if found is not None else DEFAULT_MODE
    fd, temp_name = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}{TEMP_MARK}{os.getpid()}-", suffix=".tmp"
    )
    temp = Path(temp_name)
    written = 0
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                data = chunk.encode(encoding)
                out.write(data)
                written += len(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, mode)
        if found is not None and (found.st_uid, found.st_gid) != (os.geteuid(), os.getegid()):
            with contextlib.suppress(OSError):  # only root may give a file away
                os.chown(temp, found.st_uid, found.st_gid)
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        raise
    with contextlib.suppress(OSError):  # make the rename durable where the OS allows it
        folder = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    return written


def remove_stale_temporaries(folder: Path, *, older_than: float = STALE_AFTER) -> list[Path]:
    """Remove the temporary files of exports that never finished (see the module's doc)
    from ``folder``; returns those removed."""
    removed: list[Path] = []
    cutoff = time.time() - older_than
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if TEMP_MARK not in entry.name or not _OURS.match(entry.name):
            continue
        try:
            info = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(info.st_mode) or info.st_mtime > cutoff:
                continue
            os.unlink(entry.path)
        except OSError:
            continue  # gone already, or not ours to remove
        removed.append(Path(entry.path))
    return removed
