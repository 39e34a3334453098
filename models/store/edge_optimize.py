"""Optimizes a Qdrant Edge shard copy in a process of its own: optimize() holds the GIL."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time

import qdrant_edge as qe


def optimize_shard(path: str) -> dict[str, object]:
    """Load the shard at path, build its indexes, flush and close it; a summary for the log."""
    started = time.perf_counter()
    shard = qe.EdgeShard.load(path)
    try:
        changed = shard.optimize()
        info = shard.info()
        shard.flush()
    finally:
        shard.close()
    return {
        "optimized": changed,
        "seconds": round(time.perf_counter() - started, 3),
        "points": info.points_count,
        "indexed_vectors": info.indexed_vectors_count,
        "segments": info.segments_count,
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m models.store.edge_optimize SHARD_DIR", file=sys.stderr)
        return 2
    with contextlib.suppress(OSError):
        # The index build may take every core: let the serving process win them back.
        os.nice(10)
    print(json.dumps(optimize_shard(args[0])), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
