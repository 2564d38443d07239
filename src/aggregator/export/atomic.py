"""Atomic file writing: a temporary file in the target's folder, fsync, then rename.

Readers (a web server, a sync job) see the old file or the new one, never half of one;
a failed export leaves the previous file in place and no temporary file behind.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

DEFAULT_MODE = 0o644


def write_atomic(path: str | Path, chunks: Iterable[str], *, encoding: str = "utf-8") -> int:
    """Write ``chunks`` to ``path`` atomically; returns the number of bytes written.
    Keeps the mode of the file it replaces (0644 for a new file)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = target.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = DEFAULT_MODE
    fd, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
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
