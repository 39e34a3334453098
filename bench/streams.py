"""Embedding throughput as the services run it: AsyncEmbedder's streams side by side."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from models.embedder import AsyncEmbedder
from models.images import ImageLimits, decode_image
from models.settings import ImageSettings, ModelSettings
from tests.photos import sized_jpegs

DEFAULT_OUT = Path(__file__).parent / "results" / "streams.json"


async def embed_rates(
    runner: AsyncEmbedder, images: Sequence[Image.Image], batch_sizes: Sequence[int], repeats: int
) -> dict[int, float]:
    """Images/s of `runner.embed(images)` per batch size (its streams side by side), the median
    of `repeats` timed runs; leaves the embedder's max_batch at the last size."""
    out: dict[int, float] = {}
    for b in batch_sizes:
        runner.embedder.max_batch = b
        await runner.embed(images[: b * runner.streams])  # new batch shapes: not timed
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            await runner.embed(images)
            times.append(time.perf_counter() - start)
        out[b] = len(images) / statistics.median(times)
    return out


async def rates(
    settings: ModelSettings, batch_sizes: Sequence[int], images: int, repeats: int
) -> tuple[AsyncEmbedder, dict[int, float]]:
    runner = await AsyncEmbedder.load(settings)
    limits = ImageLimits.from_settings(ImageSettings())
    size = runner.embedder.preprocessing.size
    files = sized_jpegs(images, (1024,), quality=90)
    decoded = [decode_image(f, limits, min_side=size) for f in files]
    fitted = [runner.embedder.preprocessing.fit(im) for im in decoded]
    return runner, await embed_rates(runner, fitted, batch_sizes, repeats)


def _one(streams: int, batch_sizes: Sequence[int], images: int, repeats: int) -> dict[str, Any]:
    async def measure() -> dict[str, Any]:
        runner, got = await rates(
            ModelSettings(embed_streams=streams), batch_sizes, images, repeats
        )
        threads = await runner.run(torch.get_num_threads)
        runner.close()
        return {"streams": runner.streams, "threads": threads, "images_per_s": got}

    return asyncio.run(measure())


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.streams", description=__doc__)
    p.add_argument("--streams", default="1,2", help="comma-separated stream counts to compare")
    p.add_argument("--batch-sizes", default="1,2,4,8")
    p.add_argument("--images", type=int, default=48)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    if args.one is not None:
        print(json.dumps(_one(args.one, batch_sizes, args.images, args.repeats)))
        return
    print(f"{'streams':>8}{'threads':>9}" + "".join(f"{f'b{b}':>9}" for b in batch_sizes))
    rows = []
    for n in (int(s) for s in args.streams.split(",")):
        # A process per configuration: torch keeps the threads a process first used.
        cmd = [sys.executable, "-m", "bench.streams", "--one", str(n)]
        cmd += ["--batch-sizes", args.batch_sizes, "--images", str(args.images)]
        cmd += ["--repeats", str(args.repeats)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        row = json.loads(out.strip().splitlines()[-1])
        got = {int(b): r for b, r in row["images_per_s"].items()}
        print(
            f"{row['streams']:>8}{row['threads']:>9}"
            + "".join(f"{got[b]:>9.1f}" for b in batch_sizes)
        )
        rows.append(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    machine = {"cpu_count": os.cpu_count(), "torch": torch.__version__}
    args.out.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")
    print(f"(images/s of fitted photos, TorchScript; wrote {args.out})")


if __name__ == "__main__":
    main()
