"""Measure a command as a whole process tree: wall time, peak memory, CPU seconds.

Linux only (reads ``/proc``). Every ``interval`` seconds the tree under the started process is
walked (``/proc/PID/task/*/children``) and for each process ``VmRSS``, ``VmHWM`` (its own peak
RSS, kept by the kernel) and ``utime + stime`` are read:

* ``peak_rss_max``: the largest single process — the highest ``VmHWM`` seen (plus the root's
  ``ru_maxrss`` from ``wait4``, exact even for the last moments before exit);
* ``peak_rss_sum``: the largest sum of ``VmRSS`` over the tree in one sample (sampled, so a
  peak shorter than ``interval`` can be missed; shared pages count once per process);
* ``cpu``: user + system seconds of the tree (a lower bound: the larger of the summed
  samples and the root's ``wait4`` rusage, which includes the children it reaped).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

CLK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class ProcSample:
    name: str
    rss: int  # bytes
    hwm: int  # bytes
    cpu: float  # seconds (own utime + stime)
    start: int  # start time in clock ticks since boot: (pid, start) names a process uniquely


@dataclass
class Measured:
    cmd: list[str]
    wall: float = 0.0
    returncode: int | None = None
    peak_rss_max: int = 0
    peak_rss_max_name: str = ""
    peak_rss_sum: int = 0
    cpu: float = 0.0
    processes: int = 0
    names: dict[str, int] = field(default_factory=dict)  # process name -> its peak (bytes)

    def summary(self) -> dict[str, object]:
        return {
            "wall_s": round(self.wall, 3),
            "returncode": self.returncode,
            "peak_rss_max_mb": round(self.peak_rss_max / 2**20, 1),
            "peak_rss_max_process": self.peak_rss_max_name,
            "peak_rss_sum_mb": round(self.peak_rss_sum / 2**20, 1),
            "cpu_s": round(self.cpu, 2),
            "processes": self.processes,
            "peak_by_process_mb": {k: round(v / 2**20, 1) for k, v in self.names.items()},
        }


def children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            text = Path(f"/proc/{pid}/task/{tid}/children").read_text()
        except OSError:
            continue
        out.extend(int(x) for x in text.split())
    return out


def tree(root: int) -> list[int]:
    seen = [root]
    i = 0
    while i < len(seen):
        seen.extend(c for c in children(seen[i]) if c not in seen)
        i += 1
    return seen


def sample(pid: int) -> ProcSample | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    values: dict[str, str] = {}
    for line in status.splitlines():
        key, _, value = line.partition(":")
        values[key] = value.strip()
    if "VmRSS" not in values:  # a zombie
        return None
    fields = stat.rpartition(")")[2].split()
    # after the command name: state(0) ppid(1) ... utime(11) stime(12)
    cpu = (int(fields[11]) + int(fields[12])) / CLK
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if pid else []
    return ProcSample(
        name=_label(values.get("Name", "?"), cmdline),
        rss=int(values["VmRSS"].split()[0]) * 1024,
        hwm=int(values.get("VmHWM", "0 kB").split()[0]) * 1024,
        cpu=cpu,
        start=int(fields[19]),
    )


def _label(name: str, cmdline: list[bytes]) -> str:
    """A readable role for a process: 'aggregator', 'forkserver', 'pool worker', ..."""
    text = b" ".join(cmdline).decode(errors="replace")
    if name == "aggregator-wr":  # the store writer process names itself
        return "store writer"
    if "forkserver" in text:
        # the forkserver and the pool workers it forks share its command line
        return "forkserver/worker"
    if "resource_tracker" in text:
        return "resource_tracker"
    if "multiprocessing" in text:
        return "mp child"
    return name


def tree_cpu(root: int) -> tuple[float, dict[int, ProcSample]]:
    """CPU seconds of every live process under ``root`` (inclusive), and the samples."""
    samples = {pid: s for pid in tree(root) if (s := sample(pid)) is not None}
    return sum(s.cpu for s in samples.values()), samples


class Watcher:
    """Sample a running process tree; used by :func:`measure` and for daemons."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.result = Measured([])
        self.last_cpu: dict[int, float] = {}
        self.pids: dict[int, int] = {}  # pid -> start time
        self.peak_by_pid: dict[int, tuple[str, int]] = {}

    def tick(self) -> None:
        total = 0
        for pid in tree(self.root):
            s = sample(pid)
            if s is None:
                continue
            self.pids[pid] = s.start
            total += s.rss
            self.last_cpu[pid] = s.cpu
            _name, peak = self.peak_by_pid.get(pid, (s.name, 0))
            self.peak_by_pid[pid] = (s.name, max(peak, s.hwm, s.rss))
        self.result.peak_rss_sum = max(self.result.peak_rss_sum, total)

    def finish(self, wall: float, returncode: int | None, root_rusage: object = None) -> Measured:
        r = self.result
        r.wall = wall
        r.returncode = returncode
        r.processes = len(self.pids)
        r.cpu = sum(self.last_cpu.values())
        if root_rusage is not None:
            ru_cpu = root_rusage.ru_utime + root_rusage.ru_stime  # type: ignore[attr-defined]
            r.cpu = max(r.cpu, ru_cpu)
            name, peak = self.peak_by_pid.get(self.root, ("root", 0))
            self.peak_by_pid[self.root] = (name, max(peak, root_rusage.ru_maxrss * 1024))  # type: ignore[attr-defined]
        for name, peak in self.peak_by_pid.values():
            r.names[name] = max(r.names.get(name, 0), peak)
            if peak > r.peak_rss_max:
                r.peak_rss_max, r.peak_rss_max_name = peak, name
        # the tree's peak is at least its largest process's (VmHWM is exact, sums are sampled)
        r.peak_rss_sum = max(r.peak_rss_sum, r.peak_rss_max)
        return r


def measure(
    cmd: list[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    log: Path,
    interval: float = 0.05,
    timeout: float = 3600.0,
) -> Measured:
    """Run ``cmd`` to completion (stdout and stderr to ``log``) and measure its tree."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        watcher = Watcher(proc.pid)
        rusage = None
        status = 0
        try:
            while True:
                pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                watcher.tick()
                if time.perf_counter() - started > timeout:
                    proc.kill()
                    kill_tree(proc.pid, watcher.pids)
                    pid, status, rusage = os.wait4(proc.pid, 0)
                    break
                time.sleep(interval)
        except BaseException:  # interrupted: leave nothing of ours running
            proc.kill()
            kill_tree(proc.pid, watcher.pids)
            proc.wait()
            raise
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
    result = watcher.finish(wall, proc.returncode, rusage)
    result.cmd = cmd
    kill_tree(proc.pid, watcher.pids)  # stray pool workers, if any
    return result


def kill_tree(root: int, pids: Mapping[int, int]) -> None:
    """SIGKILL processes we started (``pids``: pid -> start time, seen under ``root``) that
    are still alive; a pid reused by another process (other start time) is left alone."""
    for pid, start in pids.items():
        if pid == root:
            continue
        s = sample(pid)
        if s is None or s.start != start:
            continue
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
