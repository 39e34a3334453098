"""Indexing throughput and freshness: a catalog published at full speed and at a fixed rate through
a real broker, worker, model and Edge store, beside the model-only rate of the same run."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import platform
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from itertools import cycle, islice
from pathlib import Path
from typing import Any

import torch

from bench.photohost import photo_host
from bench.results import save
from bench.streams import embed_rates
from models.embedder import AsyncEmbedder
from models.events import ImageRef, ListingUpserted, Price
from models.images import ImageLimits, decode_image
from models.logs import LogSettings, configure_logging
from models.settings import BrokerSettings, FetchSettings, ModelSettings, StoreSettings
from models.store.types import ListingPoint, VectorStore
from stream.broker import DevBroker
from stream.metrics import OUTCOMES, WorkerMetrics
from stream.publisher import ListingPublisher
from stream.resources import WorkerResources
from stream.settings import StreamSettings, WorkerSettings
from stream.worker import running_worker
from tests.photos import PHOTO_FILES, sized_jpegs

DEFAULT_OUT = Path(__file__).parent / "results" / "index.json"
# Long sides of seller photos as listing sites store them.
LONG_SIDES = (1024, 800)


async def model_only_rates(
    runner: AsyncEmbedder, files: Sequence[bytes], sizes: Sequence[int], repeats: int = 5
) -> dict[int, float]:
    """Images/s of preprocessing + forward passes on already decoded images, per batch size,
    through the worker's own AsyncEmbedder: its threads, and its streams side by side."""
    limits = ImageLimits(max_bytes=50 * 1024 * 1024, max_pixels=100_000_000)
    size = runner.embedder.preprocessing.size
    images = [decode_image(f, limits, min_side=size) for f in files]
    return await embed_rates(runner, images, sizes, repeats)


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def timed_writes(store: VectorStore) -> dict[str, float]:
    """Wrap the store's upsert so each listing's write acknowledgement time is recorded."""
    done: dict[str, float] = {}
    upsert = store.upsert_listing

    async def recorded(point: ListingPoint) -> None:
        await upsert(point)
        done[point.listing_id] = time.time()

    setattr(store, "upsert_listing", recorded)  # noqa: B010
    return done


def event(listing_id: str, url: str) -> ListingUpserted:
    return ListingUpserted(
        listing_id=listing_id,
        version=1,
        occurred_at=datetime.now(UTC),
        state="active",
        title=f"bench listing {listing_id}",
        category="bench/items",
        price=Price(amount=Decimal("10.00"), currency="USD"),
        shop_id="S1",
        images=[ImageRef(url=url)],
    )


async def wait_handled(metrics: WorkerMetrics, n: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while sum(metrics.events_total(o) for o in OUTCOMES) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {sum(metrics.events_total(o) for o in OUTCOMES)}/{n} handled")
        await asyncio.sleep(0.02)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    # Real photos at seller sizes; cycled, so bytes repeat but every URL is distinct.
    files = sized_jpegs(len(PHOTO_FILES) * len(LONG_SIDES), LONG_SIDES, quality=88)
    # Loaded on the thread the worker will embed on, and measured there too: torch work on a
    # second thread would slow every later pass (see AsyncEmbedder).
    model_settings = ModelSettings(
        device=args.device,
        embed_batch_size=max(args.batch_sizes),
        torch_threads=args.torch_threads,
        embed_streams=args.streams,
    )
    probe = list(islice(cycle(files), args.model_images))
    # The former default, TorchScript fp32, timed in this run first, on threads of its own.
    baseline = await AsyncEmbedder.load(
        model_settings.model_copy(update={"runtime": "torch", "precision": "fp32"})
    )
    try:
        torchscript_rates = await model_only_rates(baseline, probe, args.batch_sizes)
    finally:
        baseline.close()
    torchscript_best = max(torchscript_rates.values())
    runner = await AsyncEmbedder.load(model_settings)
    embedder = runner.embedder
    device = str(embedder.device)
    rates = await model_only_rates(runner, probe, args.batch_sizes)
    best_batch = max(rates, key=lambda b: rates[b])
    best_rate = rates[best_batch]
    threads = await runner.run(torch.get_num_threads)
    runtime = f"{embedder.runtime} {embedder.inference_precision}"
    print(
        f"model only ({device}, {runtime}, {runner.streams} streams of {threads} threads), "
        "images/s by batch size:"
    )
    print("  " + "  ".join(f"b{b}: {r:.1f}" for b, r in rates.items()))
    print(f"  best: batch {best_batch}, {best_rate:.1f} images/s")
    print("TorchScript fp32 (the former default), images/s by batch size:")
    print("  " + "  ".join(f"b{b}: {r:.1f}" for b, r in torchscript_rates.items()))
    embedder.max_batch = best_batch  # the worker embeds at the device's best batch size

    result: dict[str, Any] = {
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "device": device,
            "torch_threads": threads,
            "embed_streams": runner.streams,
        },
        "runtime": runtime,
        "model_only_ips": {str(b): r for b, r in rates.items()},
        "torchscript_fp32_model_only_ips": {str(b): r for b, r in torchscript_rates.items()},
        "best_batch": best_batch,
        "best_model_ips": best_rate,
    }
    with tempfile.TemporaryDirectory(prefix="bench-index-") as tmp, DevBroker() as broker:
        settings = WorkerSettings(
            stream=StreamSettings(
                group_id="bench-indexer",
                data_dir=str(Path(tmp) / "worker"),
                max_in_flight=args.in_flight,
                decode_threads=args.decode_threads,
            ),
            broker=BrokerSettings(broker=broker.bootstrap, topic_partitions=args.partitions),
            model=model_settings.model_copy(update={"embed_batch_size": best_batch}),
            fetch=FetchSettings(allow_private_image_hosts=True),
            store=StoreSettings(index_path=Path(tmp) / "index"),
        )
        broker.create_topics(
            {
                settings.broker.topic: args.partitions,
                settings.broker.dlq_topic: 1,
                settings.broker.retry_topic: 1,
            }
        )
        # Not owned by the worker: its metrics are read after it stopped, then closed here.
        resources = await WorkerResources.around(settings, runner, owned=False)
        done = timed_writes(resources.store)
        # A lean host in its own process: the photos' serving cost stays out of the worker's.
        with photo_host(files) as host:
            urls = (host.url(i) for i in itertools.count())
            async with running_worker(settings, resources):
                publisher = ListingPublisher(broker.bootstrap, settings.broker.topic)
                sent = 0

                def publish(listing_id: str) -> float:
                    nonlocal sent
                    ev = event(listing_id, next(urls))
                    publisher.publish(ev)
                    sent += 1
                    return ev.occurred_at.timestamp()

                # Warm-up: the group joined, every stage ran once.
                for i in range(min(args.in_flight, 32)):
                    publish(f"warm-{i}")
                publisher.flush()
                await wait_handled(resources.metrics, sent, 120)

                # Full speed: the whole catalog at once.
                print(f"full speed: publishing {args.listings} listings", flush=True)
                start = time.time()
                for i in range(args.listings):
                    publish(f"full-{i}")
                publisher.flush()
                await wait_handled(resources.metrics, sent, 600)
                full_s = max(done[f"full-{i}"] for i in range(args.listings)) - start
                full_ips = args.listings / full_s
                print(
                    f"\nfull speed: {args.listings} listings (1 image each) in {full_s:.2f} s:"
                    f" {full_ips:.1f} images/s end to end"
                    f" = {100 * full_ips / best_rate:.0f}% of the model-only {best_rate:.1f}"
                )

                # Fixed rate: half the measured end-to-end throughput, freshness per event.
                rate = args.rate or full_ips / 2
                count = max(20, int(rate * args.fixed_seconds))
                occurred: dict[str, float] = {}
                t0 = time.monotonic()
                for i in range(count):
                    await _sleep_until(t0 + i / rate)
                    occurred[f"rate-{i}"] = publish(f"rate-{i}")
                publisher.flush()
                await wait_handled(resources.metrics, sent, 600)
                elapsed = time.monotonic() - t0
                fresh = [done[k] - t for k, t in occurred.items()]
                p50, p95, p99 = (percentile(fresh, q) for q in (50, 95, 99))
                print(
                    f"fixed rate: {count} listings at {rate:.1f}/s over {elapsed:.1f} s;"
                    f" freshness (event -> searchable) p50 {p50 * 1000:.0f} ms,"
                    f" p95 {p95 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms"
                )
                publisher.close()
                hist = resources.metrics.registry.get_sample_value
                batches = hist("lookalike_indexer_batch_images_count") or 0
                mean_batch = (hist("lookalike_indexer_batch_images_sum") or 0) / max(batches, 1)
        await resources.close()

    ratio = full_ips / best_rate
    over_torchscript = full_ips / torchscript_best
    result.update(
        {
            "settings": {
                "in_flight": args.in_flight,
                "partitions": args.partitions,
                "decode_threads": args.decode_threads,
                "embed_batch": best_batch,
            },
            "full_speed": {"listings": args.listings, "seconds": full_s, "images_per_s": full_ips},
            "end_to_end_over_model": ratio,
            "end_to_end_over_torchscript_model": over_torchscript,
            "fixed_rate": {
                "rate_per_s": rate,
                "listings": count,
                "freshness_s": {"p50": p50, "p95": p95, "p99": p99},
            },
            "mean_images_per_embed_batch": mean_batch,
            "targets": {
                "over_torchscript_model_ge_2.5": over_torchscript >= 2.5,
                "p99_freshness_lt_1s": p99 < 1.0,
            },
        }
    )
    print(f"\n{'metric':<42}{'value':>12}{'target':>12}{'met':>6}")
    print(f"{'end-to-end images/s':<42}{full_ips:>12.1f}")
    print(f"{'model-only images/s (best batch ' + str(best_batch) + ')':<42}{best_rate:>12.1f}")
    print(f"{'TorchScript fp32 model-only images/s (best)':<42}{torchscript_best:>12.1f}")
    print(f"{'end-to-end / model-only':<42}{ratio:>12.2f}")
    print(
        f"{'end-to-end / TorchScript fp32 model-only':<42}{over_torchscript:>12.2f}"
        f"{'>= 2.5':>12}{_yes(over_torchscript >= 2.5):>6}"
    )
    print(f"{'freshness p50 (s) at ' + f'{rate:.1f}/s':<42}{p50:>12.3f}")
    print(f"{'freshness p95 (s)':<42}{p95:>12.3f}")
    print(f"{'freshness p99 (s)':<42}{p99:>12.3f}{'< 1.0':>12}{_yes(p99 < 1.0):>6}")
    print(f"{'mean images per embed call':<42}{mean_batch:>12.1f}")
    return result


def _yes(ok: bool) -> str:
    return "yes" if ok else "NO"


async def _sleep_until(deadline: float) -> None:
    delay = deadline - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listings", type=int, default=400, help="catalog size at full speed")
    parser.add_argument("--rate", type=float, default=None, help="fixed rate (default: half)")
    parser.add_argument("--fixed-seconds", type=float, default=15.0)
    parser.add_argument(
        "--in-flight", type=int, default=256, help="events processed at once (max_in_flight)"
    )
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--decode-threads", type=int, default=2)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--torch-threads", type=int, default=None, help="per stream")
    parser.add_argument("--streams", type=int, default=None, help="LOOKALIKE_EMBED_STREAMS")
    parser.add_argument(
        "--batch-sizes", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4, 8, 16, 32]
    )
    parser.add_argument("--model-images", type=int, default=64)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    configure_logging(LogSettings(log_level="WARNING"))
    result = asyncio.run(run(args))
    save(args.out, result)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
