"""`lookalike backfill`: a catalog file and its vectors written straight to the store, in bulk.

For loading a large catalog whose embeddings were computed elsewhere (a GPU batch job with the
served model). The events are validated as `lookalike publish` validates them, all of them
before anything is written. Row i of the vectors file belongs to the i-th photo of the file,
counting the photos of each upsert in order; deletions have none. Each listing gets the payload
and the version guard the indexer gives it: an event no newer than what the index holds changes
nothing, so a backfill may run over a live index, and a replayed catalog is harmless. Without
vectors, the path is `lookalike publish`, and the indexer embeds the photos at its own rate.
On Edge it refuses while a worker holds the index (the shard has one writer).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lookalike.publish import Batch
from models.duplicates import Grouped, batch_groups
from models.events import ListingDeleted, ListingUpserted
from models.payload import ListingPayload
from models.settings import StoreSettings
from models.store.factory import open_store
from models.store.lease import writer_active
from models.store.types import ListingPoint, VectorStore

Event = ListingUpserted | ListingDeleted
# Listings per bulk write: larger batches gain little on Edge and hold more in memory.
BATCH = 1000


class BackfillError(RuntimeError):
    """The vectors do not fit the catalog, or the index cannot be written now."""


@dataclass
class BackfillResult:
    written: int = 0
    tombstoned: int = 0
    seconds: float = 0.0
    # The index build after the writes; None when it was left to the worker.
    optimize_seconds: float | None = None

    @property
    def per_second(self) -> float:
        return (self.written + self.tombstoned) / self.seconds if self.seconds else 0.0


def _photos(event: Event) -> int:
    return len(event.image_urls) if isinstance(event, ListingUpserted) else 0


def check_vectors(events: Sequence[Event], vectors: np.ndarray, dim: int) -> None:
    """Refuse, before writing anything, vectors that cannot be the catalog's."""
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise BackfillError(
            f"the vectors are {'x'.join(map(str, vectors.shape))}; the model makes {dim}-d ones"
        )
    photos = sum(_photos(e) for e in events)
    if vectors.shape[0] != photos:
        raise BackfillError(
            f"the catalog has {photos} photos in its upserts but the vectors file has "
            f"{vectors.shape[0]} rows: one row per photo, in file order"
        )


def _batches(
    events: Sequence[Event], vectors: np.ndarray
) -> Iterator[tuple[list[tuple[Event, np.ndarray]], int]]:
    """(event, its rows) in file order, cut so no listing is twice in one batch; with the
    number of events each batch covers."""
    row = 0
    batch: list[tuple[Event, np.ndarray]] = []
    seen: set[str] = set()
    for event in events:
        n = _photos(event)
        if event.listing_id in seen or len(batch) >= BATCH:
            yield batch, len(batch)
            batch, seen = [], set()
        batch.append((event, vectors[row : row + n]))
        seen.add(event.listing_id)
        row += n
    if batch:
        yield batch, len(batch)


async def _write(
    store: VectorStore,
    batch: list[tuple[Event, np.ndarray]],
    model_id: str,
    duplicate_threshold: float | None,
) -> tuple[int, int]:
    live: list[tuple[ListingUpserted, np.ndarray]] = []
    tombstones = 0
    for event, rows in batch:
        if isinstance(event, ListingUpserted) and event.state == "active":
            live.append((event, rows))
        else:
            state = event.state if isinstance(event, ListingUpserted) else "deleted"
            await store.tombstone(event.listing_id, event.version, state)
            tombstones += 1
    # The rows stay a matrix: the store converts them once (each list conversion costs ~20 us).
    grouped = [Grouped(e.listing_id, e.version, rows) for e, rows in live]
    groups = await batch_groups(store, grouped, duplicate_threshold)
    points: list[ListingPoint] = []
    for (event, _), listing, group in zip(live, grouped, groups, strict=True):
        urls = event.image_urls
        payload = ListingPayload.from_event(event, model_id, urls, [""] * len(urls), group)
        points.append(ListingPoint(event.listing_id, listing.vectors, payload.to_store()))
    await store.upsert_listings(points)
    return len(points), tombstones


async def backfill(
    batch: Batch,
    vectors: np.ndarray,
    settings: StoreSettings,
    model_id: str,
    dim: int,
    progress: bool = True,
    optimize: bool = True,
    grouping: bool = True,
) -> BackfillResult:
    """Write every event of `batch` with its vectors, each in the duplicate group the indexer
    would give it (unless `grouping` is off: its own), then build the search index (unless
    `optimize` is off: the worker builds it only after writes of its own); returns what was
    written and how fast."""
    if settings.qdrant_url is None and writer_active(settings.index_path):
        raise BackfillError(
            f"a worker holds the index at {settings.index_path}; stop it, backfill, start it"
        )
    threshold = settings.duplicate_threshold if grouping else None
    events = batch.parsed
    check_vectors(events, vectors, dim)
    result = BackfillResult()
    store = open_store(settings, model_id, dim)
    await store.ensure_collection()
    started = time.perf_counter()
    try:
        with tqdm(total=len(events), desc="backfill", unit="listing", disable=not progress) as bar:
            for chunk, count in _batches(events, vectors):
                written, tombstoned = await _write(store, chunk, model_id, threshold)
                result.written += written
                result.tombstoned += tombstoned
                bar.update(count)
        result.seconds = time.perf_counter() - started
        if optimize:
            built = time.perf_counter()
            await store.optimize()
            result.optimize_seconds = time.perf_counter() - built
    finally:
        await store.close()
    return result


def load_vectors(path: Path) -> np.ndarray:
    """The vectors file: a .npy of float32 rows, memory-mapped (a catalog may not fit in RAM)."""
    try:
        vectors = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise BackfillError(f"cannot read {path} as a .npy array: {exc}") from None
    return np.asarray(vectors, dtype=np.float32) if vectors.dtype != np.float32 else vectors
