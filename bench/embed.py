"""Embedding throughput per runtime and precision: model only (one stream and the default plan),
decode + embed, and process start with a cold and a warm export cache."""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import torch
from PIL import Image

from bench.results import save
from models.embedder import AsyncEmbedder, Embedder, resolve_device
from models.images import ImageLimits, decode_image
from models.network import load_model
from models.runtime import Plan, open_backend
from models.runtime.base import Precision, Runtime
from models.settings import ImageSettings, ModelSettings
from tests.photos import sized_jpegs

# Long sides of typical phone photos as uploaded (after the app's own downscale).
PHONE_LONG_SIDES = (1600, 1280, 1024)
DEFAULT_OUT = Path(__file__).parent / "results" / "embed.json"
T = TypeVar("T")
# (runtime, precision): today's torch default beside the OpenVINO precisions.
CPU_RUNTIMES: tuple[tuple[Runtime, Precision], ...] = (
    ("torch", "fp32"),
    ("openvino", "fp32"),
    ("openvino", "bf16"),
)
# Run in a fresh interpreter: the time from nothing to an embedder that has done one pass.
START_PROBE = """
import sys, time
t0 = time.perf_counter()
from models.embedder import Embedder
from models.settings import ModelSettings
s = ModelSettings(device="cpu", runtime=sys.argv[1], model_cache_dir=sys.argv[2])
e = Embedder.from_settings(s)
t1 = time.perf_counter()
e.warmup()
print(e.runtime, e.inference_precision, round(t1 - t0, 3), round(time.perf_counter() - t0, 3))
"""


@dataclass
class Row:
    device: str
    runtime: str
    precision: str
    batch: int
    # Preprocessed tensors, one pass at a time on one thread.
    one_stream_ips: float
    # Preprocessed tensors through AsyncEmbedder with the default streams and threads.
    default_plan_ips: float
    default_plan: str
    # JPEG bytes decoded (draft mode) and embedded, one stream.
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


async def _plan_rate(
    settings: ModelSettings, images: list[Image.Image], batch: int, repeats: int
) -> tuple[float, str]:
    runner = await AsyncEmbedder.load(settings)
    try:
        tensors = [runner.embedder.preprocessing.to_tensor(c) for c in batches(images, batch)]
        await asyncio.gather(*(runner.run(runner.embedder.embed_tensor, t) for t in tensors))
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            await asyncio.gather(*(runner.run(runner.embedder.embed_tensor, t) for t in tensors))
            times.append(time.perf_counter() - start)
        threads = settings.torch_threads or max(1, (os.cpu_count() or 1) // runner.streams)
        return len(images) / statistics.median(times), f"{runner.streams}x{threads}"
    finally:
        runner.close()


def bench_device(
    device: torch.device,
    pairs: Sequence[tuple[Runtime, Precision]],
    files: list[bytes],
    limits: ImageLimits,
    batch_sizes: list[int],
    repeats: int,
    cache_dir: Path,
) -> list[Row]:
    """Every runtime on `device`; the one-stream model rates interleaved round by round, so the
    load of a shared machine weighs on all of them alike."""
    torch.set_num_threads(1)
    embedders: list[Embedder] = []
    for runtime, precision in pairs:
        model = load_model()
        one = Plan(runtime, precision, streams=1, threads=1)
        backend = open_backend(model, device, one, cache_dir, torchscript=True)
        embedders.append(Embedder(model, device, backend=backend))
    size = embedders[0].preprocessing.size
    decoded = [decode_image(f, limits, min_side=size) for f in files]
    rows = []
    for b in batch_sizes:
        tensors = [embedders[0].preprocessing.to_tensor(c) for c in batches(decoded, b)]
        times: list[list[float]] = [[] for _ in embedders]
        for e in embedders:
            e.embed_tensor(tensors[0])  # first call at a new shape picks kernels: not timed
        for _ in range(repeats):
            for e, seen in zip(embedders, times, strict=True):
                start = time.perf_counter()
                for t in tensors:
                    e.embed_tensor(t)
                seen.append(time.perf_counter() - start)
        for (runtime, precision), e, seen in zip(pairs, embedders, times, strict=True):
            e.max_batch = b

            def end_to_end(b: int = b, e: Embedder = e) -> None:
                for chunk in batches(files, b):
                    e.embed([decode_image(f, limits, min_side=size) for f in chunk])

            e2e_ips = rate(end_to_end, len(files), repeats)
            settings = ModelSettings(
                device=device.type,
                runtime=runtime,
                precision="auto" if precision == "fp16" else precision,
                embed_batch_size=b,
                model_cache_dir=cache_dir,
            )
            plan_ips, plan = asyncio.run(_plan_rate(settings, decoded, b, repeats))
            torch.set_num_threads(1)
            row = Row(
                str(device),
                runtime,
                e.inference_precision,
                b,
                round(len(decoded) / statistics.median(seen), 1),
                round(plan_ips, 1),
                plan,
                round(e2e_ips, 1),
            )
            print_row(row)
            rows.append(row)
    return rows


def print_row(row: Row) -> None:
    print(
        f"{row.device:<7}{row.runtime:<10}{row.precision:<6}{row.batch:>6}"
        f"{row.one_stream_ips:>12.1f}{row.default_plan_ips:>10.1f} ({row.default_plan})"
        f"{row.end_to_end_ips:>14.1f}",
        flush=True,
    )


def start_times(runtimes: Sequence[Runtime]) -> list[dict[str, Any]]:
    """Seconds from a fresh interpreter to a warmed-up embedder, with a cold and a warm cache."""
    out = []
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as cache:
        for runtime in runtimes:
            for cache_state in ("cold", "warm"):
                start = time.perf_counter()
                done = subprocess.run(
                    [sys.executable, "-c", START_PROBE, runtime, cache],
                    cwd=root,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                wall = time.perf_counter() - start
                served, precision, build_s, ready_s = done.stdout.split()[-4:]
                row = {
                    "runtime": served,
                    "precision": precision,
                    "cache": cache_state,
                    "build_s": float(build_s),
                    "ready_s": float(ready_s),
                    "process_s": round(wall, 2),
                }
                print(
                    f"start {served:<9}{precision:<5} {cache_state} cache: imports + load + "
                    f"{'export + ' if cache_state == 'cold' and served == 'openvino' else ''}"
                    f"compile {row['build_s']:.2f} s, first pass done {row['ready_s']:.2f} s, "
                    f"whole process {row['process_s']:.2f} s",
                    flush=True,
                )
                out.append(row)
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.embed", description=__doc__)
    p.add_argument("--batch-sizes", default="1,4,8", help="comma-separated")
    p.add_argument("--images", type=int, default=32, help="photos per timed run")
    p.add_argument("--repeats", type=int, default=5, help="timed runs; the median is reported")
    p.add_argument(
        "--device", default="auto", help="auto (cpu, plus cuda when present), cpu, cuda or cpu,cuda"
    )
    p.add_argument(
        "--runtimes",
        default=",".join(f"{r}:{p}" for r, p in CPU_RUNTIMES),
        help="CPU runtime:precision pairs (CUDA always runs torch:fp16)",
    )
    p.add_argument("--no-start", action="store_true", help="skip the process start timings")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return p.parse_args(argv)


def devices(spec: str) -> list[torch.device]:
    if spec == "auto":
        return [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    return [resolve_device(s.strip()) for s in spec.split(",")]


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    cpu_runtimes: list[tuple[Runtime, Precision]] = []
    for pair in args.runtimes.split(","):
        runtime, precision = pair.split(":")
        if runtime not in ("torch", "openvino") or precision not in ("fp32", "bf16"):
            raise SystemExit(f"--runtimes: {pair!r} is not torch|openvino:fp32|bf16")
        cpu_runtimes.append((cast(Runtime, runtime), cast(Precision, precision)))
    limits = ImageLimits.from_settings(ImageSettings())
    # The bundled real photos, upscaled to phone sizes.
    files = sized_jpegs(args.images, PHONE_LONG_SIDES, quality=90)
    size = load_model().preprocessing.size
    dims = [decode_image(f, limits).size for f in files]
    mean_kb = statistics.mean(len(f) for f in files) / 1024
    print(
        f"{len(files)} JPEG photos, {min(dims)}..{max(dims)} px, mean {mean_kb:.0f} KiB; "
        f"torch {torch.__version__}, {os.cpu_count()} CPUs"
    )
    decode_draft = rate(
        lambda: [decode_image(f, limits, min_side=size) for f in files], len(files), args.repeats
    )
    print(f"decode only, one thread: {decode_draft:.1f} images/s with JPEG draft to >= {size} px")
    print(
        f"\n{'device':<7}{'runtime':<10}{'prec':<6}{'batch':>6}{'one stream':>12}"
        f"{'default plan':>18}{'decode+embed':>14}"
        "   (images/s; model = preprocessed tensors; torch = frozen TorchScript)"
    )
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        for device in devices(args.device):
            pairs: Sequence[tuple[Runtime, Precision]] = (
                [("torch", "fp16")] if device.type == "cuda" else cpu_runtimes
            )
            rows += bench_device(
                device, pairs, files, limits, batch_sizes, args.repeats, Path(cache)
            )
    starts = [] if args.no_start else start_times(["torch", "openvino"])
    result = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        },
        "photos": {"count": len(files), "mean_bytes": round(mean_kb * 1024), "sizes": dims},
        "repeats": args.repeats,
        "decode_only_ips": {"draft": round(decode_draft, 1)},
        "rows": [asdict(r) for r in rows],
        "start": starts,
    }
    save(args.out, result)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
