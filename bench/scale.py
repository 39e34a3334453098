"""Index scale: bulk upsert rate, optimize time, memory and disk per listing, filtered search
latency and recall@10 against exact search, by catalog size, vector size and quantization, and
for each built index by the search-time settings (--hnsw-ef, --oversampling, --acorn).

Each index is built once under --cache and reused by later runs (a run that stopped half way
starts that index again); the upsert and the index build are each bounded by --build-limit-s and
reported as not fitting when they run over; a finished upsert is kept, so the next run starts
the index build again without writing the catalog again (a build stopped part way is not
kept: Edge builds in a copy it throws away)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from bench.query import payload, percentile, synthetic_vectors
from bench.results import save
from models.allocator import give_back
from models.settings import StoreSettings
from models.store.factory import open_store
from models.store.types import ListingPoint, SearchFilters, VectorStore

DEFAULT_CACHE = Path("data/bench-scale")
DEFAULT_OUT = Path(__file__).parent / "results" / "scale.json"
CHUNK = 2000
QUERIES = 100
CATEGORY_FILTER = "home_and_living"
PRICE_MIN, PRICE_MAX = 20.0, 120.0
# Markers in a cached index: its catalog is written; its search index is built too.
UPSERTED, COMPLETE = ".upserted", ".complete"
DEFAULT_OVERSAMPLING = StoreSettings.model_fields["quantization_oversampling"].default


def bases(dim: int, cache: Path) -> np.ndarray:
    """Real embeddings of the bundled photos (and a crop of each) from the ImageNet model, cached;
    for another size, a fixed random projection of them, as a fine-tuned head would map them."""
    path = cache / "bases-1280.npy"
    if not path.exists():
        from models.embedder import Embedder
        from models.settings import ModelSettings
        from tests.photos import PHOTO_FILES, photo

        embedder = Embedder.from_settings(ModelSettings(device="cpu"))
        images = []
        for name in sorted(PHOTO_FILES):
            img = photo(name)
            w, h = img.size
            images += [img, img.crop((w // 6, h // 6, w - w // 6, h - h // 6))]
        cache.mkdir(parents=True, exist_ok=True)
        np.save(path, embedder.embed(images))
    real: np.ndarray = np.load(path)
    if dim == real.shape[1]:
        return real
    projection = np.random.default_rng(1280).standard_normal((real.shape[1], dim))
    out: np.ndarray = (real @ projection).astype(np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


@dataclass(frozen=True)
class Chunk:
    ids: list[str]
    vectors: list[np.ndarray]  # one (photos, dim) matrix per listing
    payloads: list[dict[str, Any]]


def chunks(size: int, base: np.ndarray, seed: int) -> Iterator[Chunk]:
    """The catalog, deterministically, CHUNK listings at a time: 1 to 4 photos each."""
    for start in range(0, size, CHUNK):
        n = min(CHUNK, size - start)
        rng = np.random.default_rng((seed, start))
        photos = rng.integers(1, 5, size=n)
        flat = synthetic_vectors(base, int(photos.sum()), rng)
        splits = np.cumsum(photos)[:-1]
        ids = [f"L{start + j:08d}" for j in range(n)]
        payloads = [payload(ids[j], start + j, int(photos[j])) for j in range(n)]
        yield Chunk(ids, list(np.split(flat, splits)), payloads)


def queries(base: np.ndarray, seed: int, stream: int = 999) -> np.ndarray:
    """The timed queries; another stream gives as many others, to warm the index up with."""
    rng = np.random.default_rng((seed, stream))
    return synthetic_vectors(base, QUERIES, rng)


def _passes_filter(p: dict[str, Any]) -> bool:
    return bool(p["category"].startswith(CATEGORY_FILTER) and PRICE_MIN <= p["price"] <= PRICE_MAX)


def exact_top10(size: int, base: np.ndarray, seed: int, qs: np.ndarray) -> list[list[str]]:
    """MaxSim over every listing that passes the filters, in numpy: the ground truth."""
    best_scores = np.full((len(qs), 0), -np.inf, dtype=np.float32)
    best_ids = np.empty((len(qs), 0), dtype=object)
    for chunk in chunks(size, base, seed):
        keep = [j for j, p in enumerate(chunk.payloads) if _passes_filter(p)]
        if not keep:
            continue
        scores = np.stack([(chunk.vectors[j] @ qs.T).max(axis=0) for j in keep], axis=1)
        ids = np.array([chunk.ids[j] for j in keep], dtype=object)
        all_scores = np.concatenate([best_scores, scores], axis=1)
        all_ids = np.concatenate([best_ids, np.broadcast_to(ids, scores.shape)], axis=1)
        order = np.argsort(-all_scores, axis=1)[:, :10]
        best_scores = np.take_along_axis(all_scores, order, axis=1)
        best_ids = np.take_along_axis(all_ids, order, axis=1)
    return [list(row) for row in best_ids]


def resident() -> tuple[int, int]:
    """This process's resident bytes, total and anonymous, after handing the allocator's free
    memory back: Edge's load leaves tens of MB freed but held by a thread's malloc arena, which a
    later allocation reuses, so it is no cost per listing (Linux)."""
    give_back()
    fields = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":", 1)
        fields[name] = int(value.split()[0]) * 1024
    return fields["Rss"], fields["Anonymous"]


def cached_truth(
    cache: Path, size: int, base: np.ndarray, seed: int, qs: np.ndarray
) -> list[list[str]]:
    """exact_top10, kept beside the indexes: at 1M it is minutes of numpy per search setting. Its
    name carries what it depends on, so a changed filter or query count computes it again."""
    prices = f"{PRICE_MIN:g}-{PRICE_MAX:g}"
    name = f"truth-{base.shape[1]}d-{size}-seed{seed}-q{len(qs)}-{CATEGORY_FILTER}-{prices}.json"
    path = cache / name
    if path.exists():
        kept: list[list[str]] = json.loads(path.read_text())
        return kept
    truth = exact_top10(size, base, seed, qs)
    # Whole or not at all: a run stopped while writing it leaves no file a later run would trust.
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(truth))
    partial.replace(path)
    return truth


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _allocated(path: Path) -> int:
    """Bytes the files under `path` hold on disk: Edge preallocates its mapped files sparsely."""
    return sum(f.stat().st_blocks * 512 for f in path.rglob("*") if f.is_file())


def hot_file_bytes(index: Path, quantized: bool, on_disk: bool) -> int:
    """The memory-mapped index files every search walks through, which a node must keep in RAM to
    serve without reading the disk on the search path: the HNSW graph, the multivector offsets,
    the original vectors when they are what a search scores (no quantization) and the payload
    indexes when they are mapped (on disk) rather than loaded. What Edge loads into the heap
    (quantized vectors, kept in RAM; payload indexes not on disk; the id tracker) the heap
    figure counts already. Left out: the stored payloads and, when quantized, the originals,
    which a search reads only for its results and rescored candidates, and the write-ahead log.
    Names from the segment layout of qdrant-edge 0.9."""
    total = 0
    for segment in index.glob("*/segments/*"):
        storage = segment / "vector_storage"
        parts = [segment / "vector_index", storage / "offsets"]
        parts += [] if quantized else [storage / "vectors"]
        parts += [segment / "payload_index"] if on_disk else []
        total += sum(_allocated(p) for p in parts)
    return total


@dataclass
class Result:
    size: int
    dim: int
    quantization: str
    fitted: bool = True
    upsert_per_s: float = 0.0
    optimize_s: float = 0.0
    rss_per_listing_b: float = 0.0
    # The part of it that is heap, not pages of the index files (which the kernel can evict).
    anon_per_listing_b: float = 0.0
    # The heap plus the index files every search walks (hot_file_bytes): the RAM to plan by.
    hot_per_listing_b: float = 0.0
    disk_per_listing_b: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    c8_req_s: float = 0.0
    recall_at_10: float = 0.0
    note: str = ""
    # Search-time settings of the measurement (None: the engine's default ef).
    hnsw_ef: int | None = None
    acorn: bool = False
    # Candidates rescored with the original vectors, per result (quantized indexes only).
    oversampling: float = DEFAULT_OVERSAMPLING


def _settings(
    index: Path,
    quantization: str,
    hnsw_ef: int | None = None,
    acorn: bool = False,
    oversampling: float = DEFAULT_OVERSAMPLING,
) -> StoreSettings:
    return StoreSettings(
        index_path=index,
        quantization=quantization,  # type: ignore[arg-type]
        quantization_oversampling=oversampling,
        store_on_disk=quantization != "none",
        hnsw_ef=hnsw_ef,
        acorn=acorn,
    )


async def _upsert(
    index: Path, size: int, dim: int, quantization: str, seed: int, limit_s: float
) -> Result:
    result = Result(size, dim, quantization)
    base = bases(dim, index.parent)
    shutil.rmtree(index, ignore_errors=True)
    store = open_store(_settings(index, quantization), "scale", dim)
    await store.ensure_collection()
    started = time.perf_counter()
    try:
        with tqdm(total=size, desc=f"{dim}-d {size} {quantization}", unit="listing") as bar:
            for chunk in chunks(size, base, seed):
                points = [
                    ListingPoint(lid, v, p)
                    for lid, v, p in zip(chunk.ids, chunk.vectors, chunk.payloads, strict=True)
                ]
                await store.upsert_listings(points)
                bar.update(len(points))
                if time.perf_counter() - started > limit_s:
                    result.fitted = False
                    result.note = f"upsert passed {limit_s:g} s at {bar.n} listings"
                    return result
        result.upsert_per_s = size / (time.perf_counter() - started)
    finally:
        await store.close()
    return result


async def build(
    index: Path, size: int, dim: int, quantization: str, seed: int, limit_s: float
) -> Result:
    """Upsert the catalog, then build its search index, each bounded by limit_s. A catalog
    whose upsert finished is kept (.upserted) when its index build runs over, so the next run
    resumes with the build alone."""
    upserted = index / UPSERTED
    if upserted.exists():
        result = Result(**json.loads(upserted.read_text()))
        log(f"{index.name}: upsert done before ({result.upsert_per_s:.0f}/s); building the index")
    else:
        result = await _upsert(index, size, dim, quantization, seed, limit_s)
        if not result.fitted:
            return result
        upserted.write_text(json.dumps(asdict(result)))
    store = open_store(_settings(index, quantization), "scale", dim)
    await store.ensure_collection()
    optimizing = time.perf_counter()
    try:
        # Edge's build has no progress to show: the log says when it started and how long it took.
        await asyncio.wait_for(store.optimize(), limit_s)
    except TimeoutError:
        result = replace(
            result,
            fitted=False,
            note=f"index build passed {limit_s:g} s (the upsert is kept: a later run resumes "
            "with the build)",
        )
        return result
    finally:
        await store.close()
    result.optimize_s = time.perf_counter() - optimizing
    (index / COMPLETE).write_text(json.dumps(asdict(result)))
    return result


def log(message: str) -> None:
    print(f"{datetime.now(UTC):%H:%M:%S} {message}", flush=True)


async def _timed_search(
    store: VectorStore, q: np.ndarray, filters: SearchFilters
) -> tuple[float, list[str]]:
    started = time.perf_counter()
    hits = await store.search([q.tolist()], 10, filters)
    return time.perf_counter() - started, [h.listing_id for h in hits]


async def measure(index: Path, result: Result, seed: int) -> Result:
    base = bases(result.dim, index.parent)
    qs = queries(base, seed)
    filters = SearchFilters(
        category_prefix=CATEGORY_FILTER, price_min=PRICE_MIN, price_max=PRICE_MAX
    )
    before, before_anon = resident()
    settings = _settings(
        index, result.quantization, result.hnsw_ef, result.acorn, result.oversampling
    )
    store = open_store(settings, "scale", result.dim)
    await store.ensure_collection()
    try:
        # Warm-up with other queries: page in what searches touch, as traffic would, without
        # handing the timed queries their own pages.
        for q in queries(base, seed, stream=998):
            await _timed_search(store, q, filters)
        latencies, found = [], []
        for q in qs:
            seconds, ids = await _timed_search(store, q, filters)
            latencies.append(seconds)
            found.append(ids)
        rss, anon = resident()
        result.rss_per_listing_b = (rss - before) / result.size
        result.anon_per_listing_b = (anon - before_anon) / result.size
        started = time.perf_counter()
        await asyncio.gather(*(_timed_search(store, q, filters) for q in np.concatenate([qs] * 2)))
        result.c8_req_s = 2 * len(qs) / (time.perf_counter() - started)
    finally:
        await store.close()
    result.p50_ms = percentile(latencies, 50) * 1000
    result.p99_ms = percentile(latencies, 99) * 1000
    truth = cached_truth(index.parent, result.size, base, seed, qs)
    result.recall_at_10 = statistics.mean(
        len(set(got) & set(want)) / max(1, len(want))
        for got, want in zip(found, truth, strict=True)
    )
    result.disk_per_listing_b = _du(index) / result.size
    hot = hot_file_bytes(index, settings.quantization != "none", settings.store_on_disk)
    result.hot_per_listing_b = result.anon_per_listing_b + hot / result.size
    return result


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: list[Result] = []
    for dim in args.dims:
        for size in args.sizes:
            for quantization in args.quantization:
                index = args.cache / f"{dim}d-{size}-{quantization}"
                searches = [
                    (ef or None, a, o)
                    for ef in args.hnsw_ef
                    for a in args.acorn
                    for o in (args.oversampling if quantization != "none" else [None])
                ]
                for ef, acorn, over in searches:
                    variant = f"-ef{ef}" if ef else ""
                    variant += "-acorn" if acorn else ""
                    if over is not None and over != DEFAULT_OVERSAMPLING:
                        variant += f"-os{over:g}"
                    cached = args.cache / f"{dim}d-{size}-{quantization}{variant}.json"
                    if cached.exists() and not args.rebuild:
                        done = Result(**json.loads(cached.read_text()))
                        if done.fitted:  # one that ran over is tried again, resuming its build
                            results.append(done)
                            continue
                    marker = index / COMPLETE
                    if args.no_build and not marker.exists():
                        results.append(
                            Result(size, dim, quantization, False, note="not built (--no-build)")
                        )
                        continue
                    fresh = args.rebuild and not variant
                    if marker.exists() and not fresh:
                        built = Result(**json.loads(marker.read_text()))
                    else:
                        if fresh:
                            (index / UPSERTED).unlink(missing_ok=True)
                        built = await build(
                            index, size, dim, quantization, args.seed, args.build_limit_s
                        )
                    result = replace(
                        built,
                        hnsw_ef=ef,
                        acorn=acorn,
                        oversampling=DEFAULT_OVERSAMPLING if over is None else over,
                    )
                    if result.fitted:
                        result = await measure(index, result, args.seed)
                    cached.write_text(json.dumps(asdict(result)))
                    results.append(result)
    print(
        f"{platform.node()} · {os.cpu_count()} CPUs · load {os.getloadavg()[0]:.1f} · "
        f"{datetime.now(UTC):%Y-%m-%d} · filters: category {CATEGORY_FILTER}, price "
        f"{PRICE_MIN:g}-{PRICE_MAX:g}"
    )
    header = (
        f"{'dim':>5}{'listings':>10}{'quant':>8}{'search':>16}{'upsert/s':>10}{'optimize':>10}"
        f"{'RSS B/l':>9}{'heap B/l':>9}{'hot B/l':>9}{'disk B/l':>10}"
        f"{'p50':>8}{'p99':>8}{'c8 req/s':>10}"
        f"{'recall@10':>11}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        if not r.fitted:
            state = "" if r.note.startswith("not built") else "did not fit: "
            print(f"{r.dim:>5}{r.size:>10}{r.quantization:>8}  {state}{r.note}")
            continue
        search = (f"ef {r.hnsw_ef}" if r.hnsw_ef else "default") + (" acorn" if r.acorn else "")
        if r.quantization != "none" and r.oversampling != DEFAULT_OVERSAMPLING:
            search += f" os {r.oversampling:g}"
        print(
            f"{r.dim:>5}{r.size:>10}{r.quantization:>8}{search:>16}{r.upsert_per_s:>10.0f}{r.optimize_s:>9.1f}s"
            f"{r.rss_per_listing_b:>9.0f}{r.anon_per_listing_b:>9.0f}{r.hot_per_listing_b:>9.0f}{r.disk_per_listing_b:>10.0f}{r.p50_ms:>6.2f}ms"
            f"{r.p99_ms:>6.2f}ms{r.c8_req_s:>10.0f}{r.recall_at_10:>11.3f}"
        )
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "results": [asdict(r) for r in results],
    }


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=_ints, default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dims", type=_ints, default=[256, 1280])
    parser.add_argument(
        "--quantization", type=lambda s: s.split(","), default=["none", "int8", "binary"]
    )
    parser.add_argument(
        "--hnsw-ef", type=_ints, default=[0], help="search-time ef values; 0: the engine's"
    )
    parser.add_argument(
        "--oversampling",
        type=lambda s: [float(x) for x in s.split(",")],
        default=[DEFAULT_OVERSAMPLING],
        help="quantized indexes: candidates rescored per result",
    )
    parser.add_argument(
        "--acorn",
        type=lambda s: [v == "on" for v in s.split(",")],
        default=[False],
        help="off,on: measure without and with ACORN",
    )
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="built indexes, reused")
    built = parser.add_mutually_exclusive_group()
    built.add_argument("--rebuild", action="store_true", help="build and measure again")
    built.add_argument(
        "--no-build",
        action="store_true",
        help="report the indexes built before (measuring any not measured yet); build none",
    )
    parser.add_argument("--build-limit-s", type=float, default=1800.0)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    result = asyncio.run(run(args))
    save(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
