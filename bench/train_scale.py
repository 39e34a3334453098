"""Training at scale: `train --data` on a large manifest, its photos/s per phase and peak RSS."""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.results import save

DEFAULT_DIR = Path("data/bench-train")
DEFAULT_OUT = Path(__file__).parent / "results" / "train_scale.json"
# The evaluation catalog's items each have 2 listings of 2 shots and 3 buyer photos.
PHOTOS_PER_ITEM = 7


def _lookalike(*argv: str) -> None:
    subprocess.run([sys.executable, "-m", "lookalike", *argv], check=True)


def dataset(folder: Path, photos: int) -> Path:
    """The manifest of about `photos` photos of the built-in catalog, written once and reused."""
    items = math.ceil(photos / PHOTOS_PER_ITEM)
    data = folder / f"dataset-{items}"
    manifest = data / "manifest.jsonl"
    if not manifest.exists():
        _lookalike("dataset", "demo", "--items", str(items), str(data))
    return manifest


def train(manifest: Path, out: Path, epochs: int) -> dict[str, Any]:
    """One `train --data` run as its own process: its wall time, its log and its peak RSS (the
    training process's own, as it logs with every epoch)."""
    started = time.perf_counter()
    _lookalike(
        "train", "--data", str(manifest), "--out", str(out), "--epochs", str(epochs), "--no-mlflow"
    )
    wall = time.perf_counter() - started
    history = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    peak_mb = max((e.get("peak_rss_mb", 0.0) for e in history), default=0.0)
    return {"wall_s": round(wall, 1), "peak_rss_mb": round(peak_mb, 1), "history": history}


def table(photos: int, run: dict[str, Any]) -> str:
    first, epochs = run["history"][0], run["history"][1:]
    trunk = first.get("trunk", {})
    rows = [
        "| photos | training photos | trunk, once (plain and mirrored) | val trunk | epoch "
        "| peak RSS | whole run |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    train_trunk, val_trunk = trunk.get("train", {}), trunk.get("val", {})
    epoch_rate = sorted(e["images_per_s"] for e in epochs)[len(epochs) // 2] if epochs else 0.0
    minutes, seconds = divmod(int(run["wall_s"]), 60)
    rows.append(
        f"| {photos:,} | {train_trunk.get('photos', 0):,.0f} "
        f"| {train_trunk.get('photos_per_s', 0):.1f} photos/s "
        f"| {val_trunk.get('photos_per_s', 0):.1f} photos/s | {epoch_rate:.1f} photos/s "
        f"| {run['peak_rss_mb'] / 1024:.2f} GB | {minutes} min {seconds:02d} s |"
    )
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--photos", type=int, default=50_000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    manifest = dataset(args.dir, args.photos)
    photos = sum(
        len(line.get("photos", [])) + len(line.get("buyer_photos", []))
        for line in map(json.loads, manifest.read_text().splitlines())
    )
    run = train(manifest, args.dir / "train", args.epochs)
    print(table(photos, run))
    save(
        args.out,
        {
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
            "date": time.strftime("%Y-%m-%d"),
            "photos": photos,
            **run,
        },
    )


if __name__ == "__main__":
    main()
