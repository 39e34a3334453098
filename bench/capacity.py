"""The capacity model: from bench.scale's measured bytes per listing and latency growth, what a
catalog of N listings needs (memory, disk, Qdrant nodes, shards) for each quantization."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from bench.scale import DEFAULT_OUT as SCALE_RESULTS
from bench.scale import DEFAULT_OVERSAMPLING

GIB = 2**30


# The search effort served by default (LOOKALIKE_HNSW_EF); bench.scale measures others too.
SERVED_HNSW_EF = 256


def _fitted(
    results: list[dict[str, Any]], dim: int, quantization: str, hnsw_ef: int | None
) -> list[dict[str, Any]]:
    """The measured indexes of this kind, searched as served: with `hnsw_ef` (None: the engine's
    default), the default oversampling and without ACORN, smallest first."""
    kind = [
        r
        for r in results
        if r["dim"] == dim
        and r["quantization"] == quantization
        and r.get("hnsw_ef") == hnsw_ef
        and not r.get("acorn")
        and r.get("oversampling", DEFAULT_OVERSAMPLING) == DEFAULT_OVERSAMPLING
    ]
    return sorted((r for r in kind if r["fitted"]), key=lambda r: int(r["size"]))


def largest_fitted(
    results: list[dict[str, Any]], dim: int, quantization: str, hnsw_ef: int | None
) -> dict[str, Any]:
    """The biggest measured index of this kind: its per-listing figures are the least
    dominated by fixed costs."""
    fitted = _fitted(results, dim, quantization, hnsw_ef)
    if not fitted:
        raise LookupError(f"no measured {dim}-d {quantization} index in the results")
    return fitted[-1]


def latency_growth(
    results: list[dict[str, Any]], dim: int, quantization: str, hnsw_ef: int | None
) -> float | None:
    """p50 ratio per tenfold of listings, from the two largest sizes measured (HNSW search grows
    about with the log of the size, so one factor per decade)."""
    fitted = _fitted(results, dim, quantization, hnsw_ef)
    if len(fitted) < 2:
        return None
    small, big = fitted[-2], fitted[-1]
    decades = math.log10(big["size"] / small["size"])
    return float((big["p50_ms"] / small["p50_ms"]) ** (1 / decades)) if decades > 0 else None


def ram_per_listing(result: dict[str, Any]) -> float:
    """The RAM a listing needs served: the heap and the index files every search walks (the hot
    set), not what the bench's few searches happened to page in; results from before bench.scale
    measured the hot set have only the resident figure."""
    hot = float(result.get("hot_per_listing_b") or 0.0)
    return hot if hot > 0 else float(result["rss_per_listing_b"])


def plan(
    results: list[dict[str, Any]],
    listings: int,
    dim: int,
    node_ram_gib: float,
    headroom: float,
    replication: int,
    hnsw_ef: int | None = SERVED_HNSW_EF,
) -> list[dict[str, Any]]:
    """One row per quantization: what `listings` need, and on how many nodes."""
    rows = []
    for quantization in ("none", "int8", "binary"):
        try:
            r = largest_fitted(results, dim, quantization, hnsw_ef)
        except LookupError:
            continue
        ram = ram_per_listing(r) * listings * replication / GIB
        disk = r["disk_per_listing_b"] * listings * replication / GIB
        nodes = max(1, math.ceil(ram / (node_ram_gib * headroom)))
        growth = latency_growth(results, dim, quantization, hnsw_ef)
        decades = math.log10(listings / r["size"])
        p50 = r["p50_ms"] * growth**decades if growth is not None else None
        rows.append(
            {
                "quantization": quantization,
                "measured_at": r["size"],
                "ram_gib": ram,
                "disk_gib": disk,
                "nodes": nodes,
                # At least one shard per node, so every node serves part of every search.
                "shards": max(nodes, 1),
                "recall_at_10": r["recall_at_10"],
                "p50_ms_one_node_estimate": p50,
            }
        )
    return rows


def read_results(paths: list[Path]) -> list[dict[str, Any]]:
    """The measured indexes of every results file; a kind measured in two files (same size, dim,
    quantization and search settings) counts once, from the later file."""
    merged: dict[tuple[Any, ...], dict[str, Any]] = {}
    for path in paths:
        for r in json.loads(path.read_text())["results"]:
            key = (
                r["size"],
                r["dim"],
                r["quantization"],
                r.get("hnsw_ef"),
                r.get("acorn"),
                r.get("oversampling"),
            )
            merged[key] = r
    return list(merged.values())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--results",
        type=Path,
        nargs="+",
        default=[SCALE_RESULTS],
        help="bench.scale results files, read together (e.g. one run at 100k, one at 1M)",
    )
    parser.add_argument("--listings", type=int, default=100_000_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--node-ram-gib", type=float, default=64.0)
    parser.add_argument(
        "--headroom", type=float, default=0.7, help="share of a node's RAM the index may use"
    )
    parser.add_argument("--replication", type=int, default=2, help="copies of every shard")
    parser.add_argument(
        "--hnsw-ef",
        type=int,
        default=SERVED_HNSW_EF,
        help="the search effort measured (0: the engine's default)",
    )
    args = parser.parse_args(argv)
    results = read_results(args.results)
    rows = plan(
        results,
        args.listings,
        args.dim,
        args.node_ram_gib,
        args.headroom,
        args.replication,
        args.hnsw_ef or None,
    )
    print(
        f"{args.listings:,} listings, {args.dim}-d, {args.replication} copies, nodes of "
        f"{args.node_ram_gib:g} GiB using {args.headroom:.0%} of it, searched with hnsw_ef "
        f"{args.hnsw_ef or 'default'}"
    )
    header = f"{'quant':>7}{'from':>10}{'RAM GiB':>10}{'disk GiB':>10}{'nodes':>7}{'recall@10':>11}"
    print(header + f"{'p50 (1 node)':>14}")
    print("-" * (len(header) + 14))
    for row in rows:
        p50 = row["p50_ms_one_node_estimate"]
        print(
            f"{row['quantization']:>7}{row['measured_at']:>10}{row['ram_gib']:>10.0f}"
            f"{row['disk_gib']:>10.0f}{row['nodes']:>7}{row['recall_at_10']:>11.3f}"
            + (f"{p50:>12.1f}ms" if p50 is not None else f"{'-':>14}")
        )


if __name__ == "__main__":
    main()
