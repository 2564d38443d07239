"""`export -o` and scheduled exports (export/atomic.py): a regular file is replaced
atomically; a symbolic link stays a link and its target is replaced; a FIFO, a character
device or an open descriptor (/dev/stdout) is written straight into, never replaced by a
regular file; other special files are refused; temporary files a killed export left are
removed once old, and nothing else is."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from aggregator.export.atomic import STALE_AFTER, UnwritableTarget, write_atomic
from ingest import aggregator

CHUNKS = ["<feed>", "one", "two", "</feed>"]
TEXT = "".join(CHUNKS)


def test_a_regular_file_is_replaced_whole_keeping_its_mode(tmp_path: Path) -> None:
    out = tmp_path / "out.xml"
    out.write_text("old")
    out.chmod(0o640)
    before = out.stat().st_ino
    assert write_atomic(out, CHUNKS) == len(TEXT)
    assert out.read_text() == TEXT
    assert out.stat().st_ino != before  # a new file renamed over the old one
    assert stat.S_IMODE(out.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.xml"]  # no temporary left


def test_a_symlink_stays_a_link_and_its_target_is_replaced_in_its_folder(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    target = site / "feed.xml"
    target.write_text("old")
    links = tmp_path / "links"
    links.mkdir()
    link = links / "latest.xml"
    link.symlink_to(target)
    chain = tmp_path / "chain.xml"  # a link to the link
    chain.symlink_to(link)
    write_atomic(chain, CHUNKS)
    assert chain.is_symlink() and link.is_symlink()
    assert os.readlink(link) == str(target)
    assert target.read_text() == TEXT and not target.is_symlink()
    assert sorted(p.name for p in links.iterdir()) == ["latest.xml"]
    assert sorted(p.name for p in site.iterdir()) == ["feed.xml"]


def test_a_dangling_symlink_creates_its_target(tmp_path: Path) -> None:
    link = tmp_path / "latest.xml"
    link.symlink_to(tmp_path / "new" / "feed.xml")
    write_atomic(link, CHUNKS)
    assert link.is_symlink()
    assert (tmp_path / "new" / "feed.xml").read_text() == TEXT


def test_a_fifo_is_written_into_not_replaced(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []

    def read() -> None:
        with open(fifo, "rb") as pipe:
            received.append(pipe.read())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    write_atomic(fifo, CHUNKS)
    reader.join(30)
    assert received == [TEXT.encode()]
    assert stat.S_ISFIFO(fifo.lstat().st_mode)


@pytest.mark.skipif(os.geteuid() != 0, reason="making a device node needs root")
def test_a_character_device_is_written_into_not_replaced(tmp_path: Path) -> None:
    null = tmp_path / "null"  # this test's own /dev/null (1, 3): never the system's
    os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    assert write_atomic(null, CHUNKS) == len(TEXT)
    assert stat.S_ISCHR(null.lstat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null"]


def test_a_path_naming_stdout_writes_to_the_pipe(tmp_path: Path) -> None:
    """What `-o /dev/stdout` is: a link to the process's descriptor 1. A link of the test's
    own is used, so that the system's /dev/stdout is never at stake."""
    link = tmp_path / "stdout"
    link.symlink_to("/proc/self/fd/1")
    code = textwrap.dedent(
        f"""
        from aggregator.export.atomic import write_atomic
        write_atomic({str(link)!r}, {CHUNKS!r})
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == TEXT
    assert link.is_symlink() and os.readlink(link) == "/proc/self/fd/1"


def test_stdout_redirected_to_a_file_with_append_is_appended_to(tmp_path: Path) -> None:
    """`aggregator export -o /dev/stdout >> log`: the log keeps what it had."""
    link = tmp_path / "stdout"
    link.symlink_to("/proc/self/fd/1")
    log = tmp_path / "log.txt"
    log.write_text("before\n")
    code = f"from aggregator.export.atomic import write_atomic; write_atomic({str(link)!r}, ['x'])"
    with open(log, "a") as out:
        subprocess.run([sys.executable, "-c", code], stdout=out, timeout=60, check=True)
    assert log.read_text() == "before\nx"
    assert link.is_symlink()


def test_other_special_files_are_refused(tmp_path: Path) -> None:
    sock_path = tmp_path / "sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock_path))
    try:
        with pytest.raises(UnwritableTarget, match="special file"):
            write_atomic(sock_path, CHUNKS)
        assert stat.S_ISSOCK(sock_path.lstat().st_mode)
    finally:
        server.close()
    with pytest.raises(UnwritableTarget, match="directory"):
        write_atomic(tmp_path, CHUNKS)


def test_export_to_a_socket_exits_2_with_one_line(tmp_path: Path) -> None:
    sock_path = tmp_path / "sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock_path))
    try:
        done = aggregator("export", "-f", "opml", "-o", str(sock_path), cwd=tmp_path)
    finally:
        server.close()
    assert done.returncode == 2
    assert "special file" in done.stderr and "Traceback" not in done.stderr


def _killed_export(folder: Path) -> Path:
    """A real export killed with SIGKILL mid-write: the temporary file it leaves."""
    out = folder / "big.xml"
    before = set(folder.iterdir())
    code = textwrap.dedent(
        f"""
        import os, signal
        from aggregator.export.atomic import write_atomic

        def chunks():
            yield "x" * 100_000
            os.kill(os.getpid(), signal.SIGKILL)
            yield "never"

        write_atomic({str(out)!r}, chunks())
        """
    )
    done = subprocess.run([sys.executable, "-c", code], timeout=60, check=False)
    assert done.returncode == -signal.SIGKILL
    left = [p for p in set(folder.iterdir()) - before if p.name != "big.xml"]
    assert len(left) == 1 and left[0].name.endswith(".tmp"), left
    return left[0]


def test_temporaries_of_killed_exports_are_removed_once_old(tmp_path: Path) -> None:
    stale = _killed_export(tmp_path)
    fresh = _killed_export(tmp_path)
    old = time.time() - STALE_AFTER - 60
    os.utime(stale, (old, old))
    foreign = tmp_path / ".big.xml.abc123.tmp"  # not ours (no mark): never touched
    foreign.write_text("someone else's")
    os.utime(foreign, (old, old))
    other = tmp_path / "notes.tmp"
    other.write_text("mine")
    os.utime(other, (old, old))
    write_atomic(tmp_path / "big.xml", CHUNKS)
    assert not stale.exists()
    assert fresh.exists()  # another export may be writing it right now
    assert foreign.exists() and other.exists()
    assert (tmp_path / "big.xml").read_text() == TEXT
