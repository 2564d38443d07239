"""Issue 18's ceiling experiment: the cold run beside reader, with parts of the store's work
switched off, to find out what bounds the cold ratio (docs/performance.md, "Issue 18,
seventh session").

    python -m benchmarks.ceiling --feeds 2000 --hosts 50 --rounds 2 \
        --corpora ../shared/corpora --work /work/bench/ceiling --out results.json

Each round runs, one after the other on one farm (``benchmarks.farm``, zero latency):
reader 3.26 cold (16 workers), then ``aggregator run --once`` cold for every variant. The
variants run the code of HEAD from a scratch git worktree with ``ceiling.patch`` applied
(environment switches that drop parts of the store's work; the patch says which). The
``ours`` variant sets none of them: it is HEAD's behaviour. Every ratio is against the
reader run of the same round. Whole processes are measured by ``benchmarks.peer.procs``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.farm import Farm, serve, write_config
from benchmarks.peer.procs import measure
from benchmarks.peer.run import (
    aggregator_cmd,
    ensure_farm,
    log,
    our_counts,
    peer_python,
    run_reader,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PATCH = HERE / "ceiling.patch"

# name -> the patch's switches it sets
VARIANTS: dict[str, tuple[str, ...]] = {
    "ours": (),
    "no_fts": ("AGG_X_NOFTS",),
    "bands_in_memory": ("AGG_X_MEMBANDS",),
    "anchors_in_memory": ("AGG_X_MEMANCHORS",),
    "all_three": ("AGG_X_NOFTS", "AGG_X_MEMBANDS", "AGG_X_MEMANCHORS"),
    "no_store": ("AGG_X_NOSAVE",),
}


def worktree(work: Path) -> Path:
    """A scratch worktree of HEAD with the patch applied (made again on every run)."""
    tree = work / "tree"
    if tree.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)])
        shutil.rmtree(tree, ignore_errors=True)
    subprocess.run(["git", "-C", str(ROOT), "worktree", "prune"], check=True)
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(tree), "HEAD"],
        check=True,
        capture_output=True,
    )
    subprocess.run(["git", "-C", str(tree), "apply", str(PATCH)], check=True)
    return tree


def run_dir_for(work: Path, round_no: int, name: str) -> Path:
    """An empty directory for one run."""
    run_dir = work / "runs" / f"{round_no}-{name}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    return run_dir


def run_variant(
    name: str, farm: Farm, tree: Path, work: Path, round_no: int, timeout: float
) -> dict[str, Any]:
    run_dir = run_dir_for(work, round_no, name)
    config = write_config(
        farm, run_dir / "feeds.yaml", database_url=f"sqlite:///{run_dir / 'ours.db'}"
    )
    env = dict(os.environ, PYTHONPATH=str(tree / "src"))
    env.update(dict.fromkeys(VARIANTS[name], "1"))
    cmd = [*aggregator_cmd(), "run", "--once", "--config", str(config)]
    m = measure(cmd, env=env, cwd=run_dir, log=run_dir / "run.log", timeout=timeout)
    out = m.summary() | {"items": our_counts(run_dir / "ours.db")["entries"]}
    log(f"round {round_no} {name}: {m.wall:.1f} s, items {out['items']}, rc {m.returncode}")
    return out


def reader_cold(peer: Path, urls: Path, work: Path, round_no: int) -> dict[str, Any]:
    """reader's cold run, as ``benchmarks.peer`` runs it (16 workers)."""
    run_dir = run_dir_for(work, round_no, "reader")
    return run_reader(peer, "cold", run_dir / "reader.db", urls, 16, run_dir, "reader")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--feeds", type=int, default=2000)
    ap.add_argument("--hosts", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated")
    ap.add_argument("--corpora", type=Path, default=ROOT.parent / "shared" / "corpora")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "agg-ceiling")
    ap.add_argument("--farm", type=Path, help="the farm's directory (default: in --work)")
    ap.add_argument("--port", type=int, default=18280)
    ap.add_argument("--timeout", type=float, default=1800.0)
    ap.add_argument("--out", type=Path, default=HERE / "results.json")
    args = ap.parse_args(argv)
    names = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        ap.error(f"unknown variants: {', '.join(unknown)} (known: {', '.join(VARIANTS)})")

    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    farm_dir = args.farm or work / f"farm-{args.feeds}-h{args.hosts}"
    farm = ensure_farm(farm_dir, args.feeds, args.port, args.corpora, args.hosts)
    urls = work / "urls.txt"
    urls.write_text("\n".join(farm.urls()) + "\n")
    peer = peer_python(work)
    tree = worktree(work)
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    rounds: list[dict[str, Any]] = []
    try:
        with serve(farm_dir, latency=None):
            for round_no in range(1, args.rounds + 1):
                result: dict[str, Any] = {"reader": reader_cold(peer, urls, work, round_no)}
                for name in names:
                    result[name] = run_variant(name, farm, tree, work, round_no, args.timeout)
                rounds.append(result)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)])
    table: dict[str, list[float]] = {}
    for result in rounds:
        reader_wall = result["reader"]["wall_s"]
        for name in names:
            table.setdefault(name, []).append(round(result[name]["wall_s"] / reader_wall, 3))
    res = {
        "commit": head,
        "feeds": args.feeds,
        "hosts": args.hosts,
        "rounds": rounds,
        "ratio_to_reader": table,
    }
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    print(f"cold wall / reader's cold wall in the same round, {args.feeds} feeds, {head}:")
    for name, ratios in table.items():
        print(f"  {name:18} " + "  ".join(f"{r:.2f}x" for r in ratios))


if __name__ == "__main__":
    main()
