"""Embedding throughput: model only, decode only, and decode + embed, per batch size and device."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

import torch
from PIL import Image

from models.embedder import Embedder, resolve_device
from models.images import ImageLimits, decode_image
from models.network import load_model
from models.settings import ImageSettings
from tests.photos import sized_jpegs

# Long sides of typical phone photos as uploaded (after the app's own downscale).
PHONE_LONG_SIDES = (1600, 1280, 1024)
DEFAULT_OUT = Path(__file__).parent / "results" / "embed.json"
T = TypeVar("T")


@dataclass
class Row:
    device: str
    batch: int
    model_ips: float
    model_eager_ips: float
    end_to_end_ips: float


def rate(work: Callable[[], object], items: int, repeats: int) -> float:
    """Median images/s of `repeats` timed runs of `work`, which handles `items` images."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return items / statistics.median(times)


def batches(seq: Sequence[T], size: int) -> list[Sequence[T]]:
    return [seq[i : i + size] for i in range(0, len(seq), size)]


def model_rate(embedder: Embedder, images: list[Image.Image], batch: int, repeats: int) -> float:
    tensors = [embedder.preprocessing.to_tensor(chunk) for chunk in batches(images, batch)]
    embedder.embed_tensor(tensors[0])  # first call at a new shape picks kernels: not timed

    def run() -> None:
        for t in tensors:
            embedder.embed_tensor(t)

    return rate(run, len(images), repeats)


def bench_device(
    device: torch.device,
    files: list[bytes],
    limits: ImageLimits,
    batch_sizes: list[int],
    repeats: int,
) -> list[Row]:
    # As the services run it (a frozen TorchScript trace), and the eager network beside it.
    embedder = Embedder(load_model(), device, torchscript=True)
    size = embedder.preprocessing.size
    decoded = [decode_image(f, limits, min_side=size) for f in files]
    eager = Embedder(load_model(), device)
    rows = []
    for b in batch_sizes:
        embedder.max_batch = b
        model_ips = model_rate(embedder, decoded, b, repeats)
        eager_ips = model_rate(eager, decoded, b, repeats)

        def end_to_end(b: int = b) -> None:
            for chunk in batches(files, b):
                embedder.embed([decode_image(f, limits, min_side=size) for f in chunk])

        e2e_ips = rate(end_to_end, len(files), repeats)
        row = Row(
            str(device),
            b,
            round(model_ips, 1),
            round(eager_ips, 1),
            round(e2e_ips, 1),
        )
        print_row(row)
        rows.append(row)
    return rows


def print_row(row: Row) -> None:
    print(
        f"{row.device:<8}{row.batch:>6}{row.model_ips:>10.1f}{row.model_eager_ips:>12.1f}"
        f"{row.end_to_end_ips:>14.1f}",
        flush=True,
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.embed", description=__doc__)
    p.add_argument("--batch-sizes", default="1,2,4,8,16,32", help="comma-separated")
    p.add_argument("--images", type=int, default=32, help="photos per timed run")
    p.add_argument("--repeats", type=int, default=3, help="timed runs; the median is reported")
    p.add_argument(
        "--device", default="auto", help="auto (cpu, plus cuda when present), cpu, cuda or cpu,cuda"
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return p.parse_args(argv)


def devices(spec: str) -> list[torch.device]:
    if spec == "auto":
        return [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    return [resolve_device(s.strip()) for s in spec.split(",")]


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    limits = ImageLimits.from_settings(ImageSettings())
    # The bundled real photos, upscaled to phone sizes.
    files = sized_jpegs(args.images, PHONE_LONG_SIDES, quality=90)
    size = load_model().preprocessing.size
    dims = [decode_image(f, limits).size for f in files]
    mean_kb = statistics.mean(len(f) for f in files) / 1024
    print(
        f"{len(files)} JPEG photos, {min(dims)}..{max(dims)} px, mean {mean_kb:.0f} KiB; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs"
    )

    decode_draft = rate(
        lambda: [decode_image(f, limits, min_side=size) for f in files], len(files), args.repeats
    )
    decode_full = rate(lambda: [decode_image(f, limits) for f in files], len(files), args.repeats)
    print(f"decode only, one thread: {decode_draft:.1f} images/s with JPEG draft to >= {size} px")
    print(f"                         {decode_full:.1f} images/s at full size")
    print(
        f"\n{'device':<8}{'batch':>6}{'model':>10}{'model eager':>12}{'decode+embed':>14}"
        "   (images/s of preprocessed tensors, channels_last; model = frozen TorchScript)"
    )
    rows = []
    for device in devices(args.device):
        rows += bench_device(device, files, limits, batch_sizes, args.repeats)

    result = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        },
        "photos": {"count": len(files), "mean_bytes": round(mean_kb * 1024), "sizes": dims},
        "repeats": args.repeats,
        "decode_only_ips": {"draft": round(decode_draft, 1), "full": round(decode_full, 1)},
        "rows": [asdict(r) for r in rows],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
