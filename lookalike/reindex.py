"""`lookalike reindex`: build the configured model's collection from the aliased one, then swap.

Every listing the alias's collection holds is copied with its payload; its photos are fetched
again and embedded by the new model. Tombstones are copied as tombstones, so the versions of
deleted and unlisted listings still stop older events in the new collection. The alias moves
only once every listing was tried, so searches keep using the old collection (and the old model)
until the new one is complete.
The alias does not move either when more listings failed than the failure budget allows
(`--max-failed`): the new collection is kept, incomplete, and the old one stays live.
Events applied to the old collection while this runs are not in the new one: stop the workers
first, reindex, then start them on the new model. On Edge a running worker holds the index's
writer lease, and reindex refuses while it does. The query service may keep running: it reads
its own model's collection, which nothing here changes. Edge locks an open shard, so on Edge the
source is read from a copy of its files taken at the start (the service holds the original).
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import sys
import tempfile
from collections import Counter
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from PIL import Image
from tqdm import tqdm

from models.duplicates import Grouped, duplicate_group
from models.embedder import AsyncEmbedder
from models.fetch import FetchError, HostNotAllowed, ImageFetcher
from models.images import ImageError, ImageLimits
from models.payload import ListingPayload, TombstonePayload
from models.photos import PhotoPipeline
from models.settings import FetchSettings, ImageSettings, ModelSettings, StoreSettings
from models.store.edge import EdgeStore, copy_shard, stored_vector_size
from models.store.factory import collection_name_for, model_id_of, open_store, resolve_alias
from models.store.lease import writer_active
from models.store.types import ListingPoint, StoredListing, StoreError, VectorStore

log = structlog.get_logger("lookalike.reindex")


class ReindexError(RuntimeError):
    """Nothing to reindex from, or the reindex was refused; the alias did not move."""


class NothingToDo(ReindexError):  # noqa: N818 - reads as what it reports
    """The alias already points at the configured model's collection."""


class OverBudget(ReindexError):  # noqa: N818 - reads as what it reports
    """More listings failed than the failure budget allows: the alias was left where it was."""

    def __init__(self, message: str, result: ReindexResult) -> None:
        super().__init__(message)
        self.result = result


PRIVATE_HOSTS_SETTING = "LOOKALIKE_ALLOW_PRIVATE_IMAGE_HOSTS"
_BUDGET = re.compile(r"^(\d+(?:\.\d+)?)(%?)$")


@dataclass(frozen=True)
class FailureBudget:
    """How many listings may fail before the alias stays put: a share ("1%") or a count ("3")."""

    value: float
    percent: bool = True

    @classmethod
    def parse(cls, text: str) -> FailureBudget:
        match = _BUDGET.match(text.strip())
        if match is None:
            raise ValueError(f"{text!r} is neither a share such as 1% nor a count such as 3")
        number, percent = float(match.group(1)), bool(match.group(2))
        if percent and number > 100:
            raise ValueError(f"{text!r} is more than 100%")
        if not percent and not number.is_integer():
            raise ValueError(f"{text!r}: a count of listings is a whole number")
        return cls(number, percent)

    def allowed(self, tried: int) -> int:
        """Failed listings allowed out of `tried` (a share rounds down: 1% of 50 is 0)."""
        return math.floor(tried * self.value / 100 + 1e-9) if self.percent else int(self.value)

    def __str__(self) -> str:
        return f"{self.value:g}%" if self.percent else f"{int(self.value)}"


@dataclass
class ReindexResult:
    source: str
    target: str
    listings: int = 0
    images: int = 0
    # Listings none of whose photos could be fetched and decoded: left out of the new collection.
    failed: list[str] = field(default_factory=list)
    # Why photos failed (fetch or decode reason code -> photos), for the refusal's message.
    photo_failures: Counter[str] = field(default_factory=Counter)
    # Deleted or unlisted listings, copied with their versions.
    tombstones: int = 0
    swapped: bool = False


async def _source_dim(settings: StoreSettings, collection: str) -> int:
    if settings.qdrant_url is None:
        size = await asyncio.to_thread(stored_vector_size, settings.index_path / collection)
        if size is None:
            raise ReindexError(f"collection {collection} has no stored vector size")
        return size
    # The server backend reads the size from the server; the one given here is only for creation.
    return 1


@asynccontextmanager
async def _source_store(
    settings: StoreSettings, name: str, model_id: str, dim: int
) -> AsyncIterator[VectorStore]:
    """The collection to copy from, open; on Edge, a copy of it in a scratch directory."""
    if settings.qdrant_url is not None:
        store = open_store(settings, model_id, dim)
        try:
            yield store
        finally:
            await store.close()
        return
    settings.index_path.mkdir(parents=True, exist_ok=True)
    # Scratch beside the index: the same filesystem, and a dot name no collection can have.
    with tempfile.TemporaryDirectory(prefix=".reindex-", dir=settings.index_path) as scratch:
        root = Path(scratch)
        await asyncio.to_thread(copy_shard, settings.index_path, name, root)
        store = EdgeStore(root, settings.collection_alias, name, dim)
        try:
            await store.ensure_collection()
            yield store
        finally:
            await store.close()


async def _photos(
    pipeline: PhotoPipeline, urls: list[str], failures: Counter[str]
) -> list[tuple[str, str, Image.Image]]:
    async def one(url: str) -> tuple[str, str, Image.Image] | None:
        try:
            photo = await pipeline.load(url)
        except (FetchError, ImageError) as exc:
            failures[exc.reason if isinstance(exc, FetchError) else exc.code] += 1
            log.warning("reindex_photo_failed", url=url, error=str(exc))
            return None
        # No hash is passed as known: a new model needs every photo decoded.
        assert photo.image is not None
        return url, photo.hash, photo.image

    got = await asyncio.gather(*(one(url) for url in urls))
    return [photo for photo in got if photo is not None]


async def _copy(
    listing: StoredListing,
    target: VectorStore,
    embedder: AsyncEmbedder,
    pipeline: PhotoPipeline,
    failures: Counter[str],
    duplicate_threshold: float | None,
) -> int:
    payload: dict[str, Any] = dict(listing.payload)
    stored = ListingPayload.readable(payload, ("source_image_urls", "image_urls", "version"))
    urls = stored.get("source_image_urls") or stored.get("image_urls") or []
    photos = await _photos(pipeline, urls, failures)
    if not photos:
        return 0
    vectors = await embedder.embed([image for _, _, image in photos])
    grouped = Grouped(listing.listing_id, stored.get("version", 0), vectors)
    payload.update(
        # Grouped again under the new model: its scores are its own (the one threshold).
        duplicate_group=await duplicate_group(target, grouped, duplicate_threshold),
        image_urls=[url for url, _, _ in photos],
        image_hashes=[digest for _, digest, _ in photos],
        model_id=embedder.model_id,
        indexed_at=datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    )
    await target.upsert_listing(ListingPoint(listing.listing_id, vectors, payload))
    return len(photos)


async def _copy_tombstone(listing: StoredListing, target: VectorStore) -> bool:
    """The tombstone again in the target (its retention starts over); False without a version."""
    stored = TombstonePayload.readable(listing.payload, ("version", "state"))
    if "version" not in stored:
        return False
    await target.tombstone(listing.listing_id, stored["version"], stored.get("state", "deleted"))
    return True


async def reindex(
    store: StoreSettings,
    model: ModelSettings,
    fetch: FetchSettings,
    images: ImageSettings,
    swap: bool = True,
    progress: bool = True,
    max_failed: FailureBudget | None = None,
) -> ReindexResult:
    """Copy the aliased collection into the configured model's one; point the alias at it unless
    more listings failed than `max_failed` (default 1%): then raise OverBudget."""
    budget = max_failed or FailureBudget(1.0)
    if store.qdrant_url is None and await asyncio.to_thread(writer_active, store.index_path):
        raise ReindexError(
            f"a worker is writing to the Edge index at {store.index_path} (it holds "
            f"{store.index_path / 'worker.lock'}): the events it applies meanwhile would be "
            "missing from the new collection. Stop the workers (or `lookalike dev`), reindex, "
            "then start them on the new model"
        )
    source_name = await resolve_alias(store)
    if source_name is None:
        raise ReindexError(f"alias {store.collection_alias!r} points at no collection yet")
    source_model = model_id_of(store.collection_alias, source_name)
    if source_model is None:
        raise ReindexError(f"alias target {source_name!r} is not a {store.collection_alias} one")
    runner = await AsyncEmbedder.load(model)
    embedder = runner.embedder
    target_name = collection_name_for(store.collection_alias, embedder.model_id)
    if target_name == source_name:
        runner.close()
        raise NothingToDo(
            f"nothing to do: the alias {store.collection_alias} already points at {target_name}, "
            "the configured model's collection"
        )
    result = ReindexResult(source=source_name, target=target_name)
    target = open_store(store, embedder.model_id, embedder.dim)
    fetcher = ImageFetcher(fetch, max_bytes=images.max_image_bytes)
    limits = ImageLimits.from_settings(images)
    # A listing's photos decode side by side, one per core, off the default executor that the
    # fetcher's resolver uses.
    pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="decode")
    pipeline = PhotoPipeline(fetcher, pool, embedder.preprocessing, limits)
    try:
        source_dim = await _source_dim(store, source_name)
        async with _source_store(store, source_name, source_model, source_dim) as source:
            await target.ensure_collection()
            total = await source.count(None)
            log.info("reindex_started", source=source_name, target=target_name, listings=total)
            with tqdm(
                total=total, desc="reindex", unit="listing", file=sys.stderr, disable=not progress
            ) as bar:
                async for listing in source.scroll(include_tombstones=True):
                    if listing.tombstone:
                        result.tombstones += await _copy_tombstone(listing, target)
                        continue
                    n = await _copy(
                        listing,
                        target,
                        runner,
                        pipeline,
                        result.photo_failures,
                        store.duplicate_threshold,
                    )
                    if n:
                        result.listings += 1
                        result.images += n
                    else:
                        result.failed.append(listing.listing_id)
                    bar.update(1)
        tried = result.listings + len(result.failed)
        if len(result.failed) > budget.allowed(tried):
            log.warning(
                "reindex_refused",
                source=source_name,
                target=target_name,
                failed=len(result.failed),
                listings=tried,
                max_failed=str(budget),
                photo_failures=dict(result.photo_failures),
            )
            raise OverBudget(_over_budget(result, tried, budget, fetch), result)
        if swap:
            await target.point_alias_to_self()
            result.swapped = True
        log.info(
            "reindex_done",
            source=source_name,
            target=target_name,
            listings=result.listings,
            failed=len(result.failed),
            tombstones=result.tombstones,
            swapped=result.swapped,
        )
        return result
    except StoreError as exc:
        raise ReindexError(str(exc)) from exc
    finally:
        await fetcher.close()
        pool.shutdown(wait=False, cancel_futures=True)
        await target.close()
        runner.close()


def _over_budget(
    result: ReindexResult, tried: int, budget: FailureBudget, fetch: FetchSettings
) -> str:
    reasons = ", ".join(f"{reason} {n}" for reason, n in result.photo_failures.most_common())
    message = (
        f"{len(result.failed)} of {tried} listings failed (no photo could be fetched and "
        f"decoded; photos failed: {reasons or 'none'}), more than --max-failed {budget} allows "
        f"({budget.allowed(tried)}): the alias still points at {result.source}. "
        f"{result.target} is kept as built so far; run reindex again once the photos are back"
    )
    private = result.photo_failures.get(HostNotAllowed.default_reason, 0)
    if private and not fetch.allow_private_image_hosts:
        message += (
            f". {private} photos are on loopback or private addresses, which the fetcher refuses "
            f"unless {PRIVATE_HOSTS_SETTING}=true (the dev stack's demo photos are on loopback)"
        )
    return message
