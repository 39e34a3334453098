"""`lookalike backfill` into an empty Edge index: listings/s with the vectors supplied, for a
generated catalog of 1 to 4 photos a listing, 256-d or 1280-d vectors, with duplicate grouping
(the default) or without it (`--no-grouping`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from bench.query import CATEGORIES
from lookalike.backfill import backfill, load_vectors
from lookalike.publish import validate
from models.settings import StoreSettings


def write_catalog(path: Path, vectors: Path, listings: int, dim: int, seed: int) -> int:
    """A catalog file of upserts and its vectors file; returns the number of photos."""
    rng = np.random.default_rng(seed)
    photos = rng.integers(1, 5, size=listings)
    with path.open("w") as f:
        for i, n in enumerate(photos):
            event = {
                "type": "listing.upserted",
                "listing_id": f"L{i:08d}",
                "version": 1,
                "occurred_at": "2026-12-01T10:00:00Z",
                "state": "active",
                "title": f"listing {i}",
                "category": CATEGORIES[i % len(CATEGORIES)],
                "price": {"amount": f"{5 + i % 200}.00", "currency": "USD"},
                "shop_id": f"S{i % 500}",
                "images": [{"url": f"https://cdn.example/{i}/{m}.jpg"} for m in range(n)],
            }
            f.write(json.dumps(event) + "\n")
    rows = rng.standard_normal((int(photos.sum()), dim)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    np.save(vectors, rows)
    return int(photos.sum())


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-backfill-") as tmp:
        root = Path(tmp)
        catalog, vectors = root / "catalog.jsonl", root / "vectors.npy"
        photos = write_catalog(catalog, vectors, args.listings, args.dim, args.seed)
        started = time.perf_counter()
        batch = validate(catalog, "jsonl")
        validated = time.perf_counter() - started
        result = await backfill(
            batch,
            load_vectors(vectors),
            StoreSettings(index_path=root / "index"),
            "bench-backfill",
            args.dim,
            optimize=False,  # bench.scale measures the index build
            grouping=not args.no_grouping,
        )
    print(
        f"{platform.node()} · {os.cpu_count()} CPUs · load {os.getloadavg()[0]:.1f} · "
        f"{datetime.now(UTC):%Y-%m-%d}"
    )
    print(
        f"{args.listings} listings, {photos} photos, {args.dim}-d, "
        f"{'no grouping' if args.no_grouping else 'grouped'}: validated in {validated:.1f} s, "
        f"written in {result.seconds:.1f} s = {result.per_second:.0f} listings/s "
        f"({args.listings / (validated + result.seconds):.0f}/s with validation)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listings", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--no-grouping", action="store_true", help="as lookalike backfill's")
    asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
