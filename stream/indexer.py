"""Turns batches of raw listing messages into index writes: parse, guard, fetch, embed, write."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import numpy as np
import structlog
from PIL import Image

from models.events import EventError, ListingDeleted, ListingUpserted, parse_event
from models.fetch import FetchError
from models.images import ImageError, ImageLimits, content_hash
from models.network import Preprocessing
from models.store.types import ListingPoint, VectorStore, category_prefixes
from stream.metrics import WorkerMetrics

log = structlog.get_logger("stream.indexer")

T = TypeVar("T")
ListingEvent = ListingUpserted | ListingDeleted


@dataclass(frozen=True)
class Incoming:
    """One consumed message: raw bytes, where it came from; `handle` is the transport's event."""

    key: bytes | None
    value: bytes
    headers: Sequence[tuple[str, bytes]]
    topic: str
    partition: int
    offset: int
    handle: Any = None


@dataclass(frozen=True)
class Applied:
    """The last version applied to a listing; deletions stay as tombstones so late events lose."""

    version: int
    deleted: bool


class VersionGuard(Protocol):
    """Where the last applied version per listing is kept (a changelog-backed table)."""

    def last(self, listing_id: str) -> Applied | None: ...

    def record(self, listing_id: str, applied: Applied, message: Incoming) -> None: ...


class DeadLetters(Protocol):
    """Sends a message to the dead-letter topic and returns once the broker acknowledged it."""

    async def send(
        self, message: Incoming, reason: str, stage: str, attempts: int, detail: str
    ) -> None: ...


class Fetcher(Protocol):
    async def fetch(self, url: str) -> bytes: ...


class AsyncEmbedderLike(Protocol):
    model_id: str
    dim: int

    async def embed(self, images: Sequence[Image.Image]) -> np.ndarray: ...


@dataclass
class _Photo:
    url: str
    hash: str | None = None
    vector: list[float] | None = None
    image: Image.Image | None = None
    error: str | None = None


@dataclass
class _Upsert:
    event: ListingUpserted
    message: Incoming
    photos: list[_Photo] = field(default_factory=list)
    payload_only: bool = False


@dataclass
class Prepared:
    """A batch after parsing, guarding and fetching: what is left is embedding and writing."""

    messages: list[Incoming]
    deletes: list[tuple[ListingEvent, Incoming]] = field(default_factory=list)
    upserts: list[_Upsert] = field(default_factory=list)

    @property
    def listing_ids(self) -> set[str]:
        return {e.listing_id for e, _ in self.deletes} | {u.event.listing_id for u in self.upserts}


def _now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def listing_payload(event: ListingUpserted, model_id: str) -> dict[str, Any]:
    """The payload fields that come from the event alone (no image fields)."""
    return {
        "listing_id": event.listing_id,
        "title": event.title,
        "category": event.category,
        "category_path": category_prefixes(event.category),
        "price": float(event.price.amount),
        "price_amount": str(event.price.amount),
        "currency": event.price.currency,
        "shop_id": event.shop_id,
        "state": event.state,
        "source_image_urls": event.image_urls,
        "version": event.version,
        "model_id": model_id,
        "occurred_at": event.occurred_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "indexed_at": _now_iso(),
    }


class ListingIndexer:
    """Applies batches of listing messages to a vector store, idempotently and in version order."""

    def __init__(
        self,
        *,
        store: VectorStore,
        embedder: AsyncEmbedderLike,
        fetcher: Fetcher,
        guard: VersionGuard,
        dead_letters: DeadLetters,
        metrics: WorkerMetrics,
        decode_pool: Executor,
        image_limits: ImageLimits,
        preprocessing: Preprocessing,
        fetch_attempts: int = 1,
        store_retry_s: float = 60.0,
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.fetcher = fetcher
        self.guard = guard
        self.dead_letters = dead_letters
        self.metrics = metrics
        self._decode_pool = decode_pool
        self._limits = image_limits
        self._preprocessing = preprocessing
        self._fetch_attempts = fetch_attempts
        self._store_retry_s = store_retry_s
        # Store writes and optimize() never overlap.
        self.store_lock = asyncio.Lock()
        self.writes_since_optimize = 0
        self.last_write_at = time.monotonic()

    async def process(self, messages: Sequence[Incoming]) -> None:
        """Apply one batch; returns once every message is written or dead-lettered (then ack)."""
        await self.finish(await self.prepare(messages))

    async def prepare(
        self,
        messages: Sequence[Incoming],
        barrier: Callable[[set[str]], Awaitable[None]] | None = None,
    ) -> Prepared:
        """Parse, dead-letter the invalid, drop the stale, fetch and decode new photos.

        `barrier` is awaited with the batch's listing ids before any applied state is read, so a
        batch still being written that shares a listing can finish first."""
        self.metrics.batch_events.observe(len(messages))
        prepared = Prepared(messages=list(messages))
        latest: dict[str, tuple[ListingEvent, Incoming]] = {}
        for message in messages:
            try:
                event = parse_event(message.value)
            except EventError as exc:
                await self._dead_letter(message, exc.reason, "parse", 1, str(exc))
                continue
            # Every event carries the listing's full state: within a batch only the newest counts.
            current = latest.get(event.listing_id)
            if current is not None and current[0].version >= event.version:
                self._stale(event, "superseded in batch")
                continue
            if current is not None:
                self._stale(current[0], "superseded in batch")
            latest[event.listing_id] = (event, message)

        if barrier is not None and latest:
            await barrier(set(latest))
        for event, message in latest.values():
            last = self.guard.last(event.listing_id)
            if last is not None and last.version >= event.version:
                self._stale(event, "not newer than applied", applied=last.version)
                continue
            if isinstance(event, ListingDeleted) or not event.searchable:
                prepared.deletes.append((event, message))
            else:
                prepared.upserts.append(_Upsert(event=event, message=message))
        await self._fetch_photos(prepared.upserts)
        return prepared

    async def finish(self, prepared: Prepared) -> None:
        """Embed what is new, write every listing, record applied versions."""
        upserts = []
        for upsert in prepared.upserts:
            ok = [p for p in upsert.photos if p.error is None]
            if upsert.payload_only or ok:
                upserts.append(upsert)
                continue
            reasons = sorted({p.error or "" for p in upsert.photos})
            await self._dead_letter(
                upsert.message,
                "images_unavailable",
                "fetch",
                self._fetch_attempts,
                f"no image of {upsert.event.listing_id} could be used: {', '.join(reasons)}",
            )
        await self._embed(upserts)
        async with self.store_lock:
            for event, message in prepared.deletes:
                if self._superseded(event):
                    continue
                await self._with_retry(functools.partial(self.store.delete, event.listing_id))
                deleted = isinstance(event, ListingDeleted)
                self._applied(event, message, deleted=deleted, outcome="deleted")
            for upsert in upserts:
                if not self._superseded(upsert.event):
                    await self._write(upsert)

    def _superseded(self, event: ListingEvent) -> bool:
        # Checked again right before the write: an overlapping batch may have applied a newer one.
        last = self.guard.last(event.listing_id)
        if last is not None and last.version >= event.version:
            self._stale(event, "not newer than applied", applied=last.version)
            return True
        return False

    async def _fetch_photos(self, upserts: list[_Upsert]) -> None:
        if not upserts:
            return
        stored_all = await asyncio.gather(
            *(
                self._with_retry(functools.partial(self.store.get, u.event.listing_id, True))
                for u in upserts
            )
        )
        jobs: list[Awaitable[None]] = []
        for upsert, stored in zip(upserts, stored_all, strict=True):
            payload = stored.payload if stored is not None else {}
            if (
                stored is not None
                and payload.get("source_image_urls") == upsert.event.image_urls
                and payload.get("model_id") == self.embedder.model_id
            ):
                upsert.payload_only = True
                continue
            known: dict[str, list[float]] = {}
            if stored is not None and payload.get("model_id") == self.embedder.model_id:
                hashes = payload.get("image_hashes") or []
                known = dict(zip(hashes, stored.vectors, strict=False))
            for url in upsert.event.image_urls:
                photo = _Photo(url=url)
                upsert.photos.append(photo)
                jobs.append(self._fetch_one(photo, known))
        await asyncio.gather(*jobs)

    async def _fetch_one(self, photo: _Photo, known: dict[str, list[float]]) -> None:
        try:
            data = await self.fetcher.fetch(photo.url)
        except FetchError as exc:
            photo.error = exc.reason
            self.metrics.images_failed.labels(exc.reason).inc()
            log.info("image_fetch_failed", url=photo.url, reason=exc.reason, error=str(exc))
            return
        photo.hash = content_hash(data)
        reused = known.get(photo.hash)
        if reused is not None:
            photo.vector = list(reused)
            self.metrics.images_reused.inc()
            return
        loop = asyncio.get_running_loop()
        try:
            photo.image = await loop.run_in_executor(
                self._decode_pool, self._preprocessing.load, data, self._limits
            )
        except ImageError as exc:
            photo.error = exc.code
            self.metrics.images_failed.labels(exc.code).inc()
            log.info("image_decode_failed", url=photo.url, reason=exc.code, error=str(exc))
            return
        self.metrics.images_fetched.inc()

    async def _embed(self, upserts: list[_Upsert]) -> None:
        pending = [p for u in upserts for p in u.photos if p.image is not None]
        self.metrics.batch_images.observe(len(pending))
        if not pending:
            return
        vectors = await self.embedder.embed([p.image for p in pending if p.image is not None])
        for photo, vector in zip(pending, vectors, strict=True):
            photo.vector = vector.astype(np.float32).tolist()
            # Pixels are no longer needed; free them before the write.
            photo.image = None

    async def _write(self, upsert: _Upsert) -> None:
        event, model_id = upsert.event, self.embedder.model_id
        payload = listing_payload(event, model_id)
        if upsert.payload_only:
            await self._with_retry(lambda: self.store.set_payload(event.listing_id, payload))
            self._applied(event, upsert.message, deleted=False, outcome="payload_only")
            return
        used = [p for p in upsert.photos if p.vector is not None]
        payload["image_urls"] = [p.url for p in used]
        payload["image_hashes"] = [p.hash for p in used]
        point = ListingPoint(
            listing_id=event.listing_id,
            vectors=[p.vector for p in used if p.vector is not None],
            payload=payload,
        )
        await self._with_retry(lambda: self.store.upsert_listing(point))
        failed = len(upsert.photos) - len(used)
        self._applied(event, upsert.message, deleted=False, outcome="indexed", failed=failed)

    def _applied(
        self,
        event: ListingEvent,
        message: Incoming,
        *,
        deleted: bool,
        outcome: Any,
        failed: int = 0,
    ) -> None:
        # Recorded only after the store acknowledged: a crash before this line replays the event.
        self.guard.record(event.listing_id, Applied(event.version, deleted), message)
        self.metrics.count(outcome)
        lag = (datetime.now(UTC) - event.occurred_at).total_seconds()
        self.metrics.lag.observe(max(lag, 0.0))
        self.writes_since_optimize += 1
        self.last_write_at = time.monotonic()
        log.debug(
            "listing_applied",
            listing_id=event.listing_id,
            version=event.version,
            outcome=outcome,
            images_failed=failed,
        )

    def _stale(self, event: ListingEvent, why: str, applied: int | None = None) -> None:
        self.metrics.count("stale")
        log.debug(
            "event_stale",
            listing_id=event.listing_id,
            version=event.version,
            why=why,
            applied=applied,
        )

    async def _dead_letter(
        self, message: Incoming, reason: str, stage: str, attempts: int, detail: str
    ) -> None:
        await self.dead_letters.send(message, reason, stage, attempts, detail)
        self.metrics.count("dead_lettered")
        log.warning(
            "event_dead_lettered",
            reason=reason,
            stage=stage,
            partition=message.partition,
            offset=message.offset,
            detail=detail[:500],
        )

    async def _with_retry(self, call: Callable[[], Awaitable[T]]) -> T:
        deadline = time.monotonic() + self._store_retry_s
        delay = 0.1
        while True:
            try:
                return await call()
            except Exception as exc:
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("store_write_retry", error=repr(exc), delay_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def maybe_optimize(self, after_writes: int, idle_s: float) -> bool:
        """Build the store's search index once enough writes happened and the stream went quiet."""
        if self.writes_since_optimize < after_writes:
            return False
        if time.monotonic() - self.last_write_at < idle_s:
            return False
        # Not under store_lock: the store keeps taking writes while it builds its indexes.
        started = time.monotonic()
        writes, self.writes_since_optimize = self.writes_since_optimize, 0
        await self.store.optimize()
        log.info("store_optimized", writes=writes, took_s=round(time.monotonic() - started, 3))
        return True
