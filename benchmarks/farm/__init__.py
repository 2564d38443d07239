"""A farm of generated feeds and article pages served on loopback (nginx), for benchmarks.

    python -m benchmarks.farm generate --feeds 2000 --out benchmarks/work/farm
    python -m benchmarks.farm generate --feeds 2000 --hosts 50 --out …   # 127.0.1.1 … .50
    python -m benchmarks.farm serve benchmarks/work/farm
    python -m benchmarks.farm config benchmarks/work/farm --out feeds.yaml

From Python::

    from benchmarks.farm import generate, serve, write_config
    with serve(farm_dir) as served:
        write_config(served.farm, path, limit=300, full_text=True)
"""

from .config import write_config
from .generate import Farm, FeedInfo, generate
from .serve import Served, serve

__all__ = ["Farm", "FeedInfo", "Served", "generate", "serve", "write_config"]
