"""Applies one listing event to the vector store: parse, guard by version, fetch, embed, write."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Container, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import numpy as np
import structlog
from PIL import Image

from models.duplicates import Grouped, Searcher, duplicate_group
from models.events import EventError, ListingDeleted, ListingUpserted, parse_event
from models.fetch import FetchError
from models.images import ImageError
from models.payload import ListingPayload
from models.photos import LoadedPhoto
from models.store.types import ListingPoint, StoredListing
from stream.metrics import Outcome, WorkerMetrics
from stream.persist import Persistence

log = structlog.get_logger("stream.indexer")

ListingEvent = ListingUpserted | ListingDeleted
Stage = Literal["parse", "guard", "fetch", "embed", "write"]

# Headers of a message on the retry topic.
ATTEMPT_HEADER = "retry.attempt"
DUE_HEADER = "retry.due"


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

    def header(self, name: str) -> bytes | None:
        return next((v for k, v in self.headers if k == name), None)

    @property
    def attempt(self) -> int:
        """Which try of this event this is: 1 on the listings topic, more on the retry topic."""
        raw = self.header(ATTEMPT_HEADER)
        try:
            return max(int(raw or b"1"), 1)
        except ValueError:
            return 1

    @property
    def due(self) -> float:
        """When (unix seconds) a retried event may be tried again; 0 for a first try."""
        raw = self.header(DUE_HEADER)
        try:
            return float(raw or b"0")
        except ValueError:
            return 0.0


class ListingStore(Searcher, Protocol):
    """The store operations the indexer needs; every write is conditional on a newer version."""

    async def get(self, listing_id: str, with_vectors: bool = False) -> StoredListing | None: ...

    async def upsert_listing(self, point: ListingPoint) -> None: ...

    async def set_payload(self, listing_id: str, payload: dict[str, Any]) -> None: ...

    async def tombstone(self, listing_id: str, version: int, state: str) -> None: ...


class PhotoLoader(Protocol):
    """Fetch, hash and decode one photo (decoding skipped when its hash is known)."""

    async def load(self, url: str, known: Container[str] = ()) -> LoadedPhoto: ...


class DeadLetters(Protocol):
    """Sends a message to the dead-letter topic and returns once the broker acknowledged it."""

    async def send(
        self, message: Incoming, reason: str, stage: str, attempts: int, detail: str
    ) -> None: ...


class Retries(Protocol):
    """Sends a message to the retry topic, to be tried again (as `attempt`) not before `due`."""

    async def send(self, message: Incoming, attempt: int, due: float, reason: str) -> None: ...


EmbedOne = Callable[[Image.Image], Awaitable[np.ndarray]]


@dataclass(frozen=True)
class IndexerPolicy:
    """Deadlines and retry rounds of the indexer."""

    # Every photo of a listing must be fetched and decoded within this, all together.
    fetch_deadline_s: float = 15.0
    # Rounds through the retry topic for a listing whose photos failed only transiently.
    max_retries: int = 2
    # Delay before the first retry round; doubles per round.
    retry_delay_s: float = 10.0
    # A listing joins the duplicate group of a live listing its photos score this close to.
    duplicate_threshold: float | None = None


@dataclass
class _Photo:
    url: str
    hash: str | None = None
    vector: list[float] | None = None
    image: Image.Image | None = None
    error: str | None = None
    transient: bool = False


@dataclass
class _Progress:
    stage: Stage = "parse"
    photos: list[_Photo] = field(default_factory=list)


class ListingIndexer:
    """Applies listing events to a vector store, idempotently and in version order.

    The store is the source of truth for versions: each point (tombstones of deleted and
    non-active listings included) carries the version last applied, and every write is
    conditional on being newer, so a redelivered, retried or raced older event changes nothing.
    Any failure caused by an event's content ends on the dead-letter topic; infrastructure
    failures (store, broker) are retried by `persist` until they pass."""

    def __init__(
        self,
        *,
        store: ListingStore,
        embed: EmbedOne,
        model_id: str,
        photos: PhotoLoader,
        dead_letters: DeadLetters,
        retries: Retries,
        metrics: WorkerMetrics,
        persist: Persistence,
        policy: IndexerPolicy | None = None,
    ) -> None:
        self.store = store
        self.embed = embed
        self.model_id = model_id
        self.photos = photos
        self.dead_letters = dead_letters
        self.retries = retries
        self.metrics = metrics
        self.persist = persist
        self.policy = policy or IndexerPolicy()
        self.writes_since_optimize = 0
        self.last_write_at = time.monotonic()
        # Grouping and writing one listing at a time: two copies in flight side by side would
        # each query before the other's write and start two groups (models/duplicates.py).
        self._grouping = asyncio.Lock()

    async def handle(self, message: Incoming) -> Outcome:
        """Apply one message; returns once it is written, found stale, retried or dead-lettered."""
        progress = _Progress()
        try:
            try:
                event = parse_event(message.value)
            except EventError as exc:
                return await self._dead_letter(message, exc.reason, "parse", str(exc))
            return await self._apply(event, message, progress)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Whatever the event's data made fail, it must not stop the stream.
            log.exception("event_failed", stage=progress.stage, offset=message.offset)
            return await self._dead_letter(
                message, "processing_failed", progress.stage, f"{type(exc).__name__}: {exc}"
            )

    async def _apply(self, event: ListingEvent, message: Incoming, progress: _Progress) -> Outcome:
        progress.stage = "guard"
        listing_id = event.listing_id
        stored = await self.persist.call(
            "store", lambda: self.store.get(listing_id, with_vectors=True)
        )
        if stored is not None and stored.version is not None and stored.version >= event.version:
            return self._stale(event, stored.version)
        if isinstance(event, ListingDeleted) or not event.searchable:
            state = "deleted" if isinstance(event, ListingDeleted) else event.state
            progress.stage = "write"
            await self.persist.call(
                "store", lambda: self.store.tombstone(listing_id, event.version, state)
            )
            return self._applied(event, "deleted")
        live = stored if stored is not None and not stored.tombstone else None
        current = live.payload if live is not None else {}
        same_model = current.get("model_id") == self.model_id
        if same_model and current.get("source_image_urls") == event.image_urls:
            progress.stage = "write"
            fields = ListingPayload.from_event(event, self.model_id).event_fields()
            await self.persist.call("store", lambda: self.store.set_payload(listing_id, fields))
            return self._applied(event, "payload_only")

        progress.stage = "fetch"
        known = _known_vectors(live) if same_model else {}
        photos = await self._load_photos(event, known, progress)
        usable = [p for p in photos if p.error is None]
        if not usable:
            return await self._unavailable(event, message, photos)

        progress.stage = "embed"
        pending = [p for p in usable if p.image is not None]
        if pending:
            vectors = await asyncio.gather(*(self.embed(p.image) for p in pending if p.image))
            for photo, vector in zip(pending, vectors, strict=True):
                photo.vector = vector.astype(np.float32).tolist()
                photo.image = None  # pixels are no longer needed: free them before the write

        progress.stage = "write"
        rows = [p.vector for p in usable if p.vector is not None]
        grouped = Grouped(listing_id, event.version, rows)
        threshold = self.policy.duplicate_threshold
        async with self._grouping:
            group = await self.persist.call(
                "store", lambda: duplicate_group(self.store, grouped, threshold)
            )
            payload = ListingPayload.from_event(
                event,
                self.model_id,
                image_urls=[p.url for p in usable],
                image_hashes=[p.hash or "" for p in usable],
                duplicate_group=group,
            )
            point = ListingPoint(listing_id=listing_id, vectors=rows, payload=payload.to_store())
            await self.persist.call("store", lambda: self.store.upsert_listing(point))
        return self._applied(event, "indexed", failed=len(photos) - len(usable))

    async def _load_photos(
        self, event: ListingUpserted, known: dict[str, list[float]], progress: _Progress
    ) -> list[_Photo]:
        photos = [_Photo(url=url) for url in event.image_urls]
        progress.photos = photos
        tasks = [asyncio.ensure_future(self._load_one(p, known)) for p in photos]
        try:
            _, late = await asyncio.wait(tasks, timeout=self.policy.fetch_deadline_s)
        except BaseException:
            for task in tasks:
                task.cancel()
            raise
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        for photo, task in zip(photos, tasks, strict=True):
            if task in late:
                photo.error, photo.transient = "deadline", True
                self.metrics.images_failed.labels("deadline").inc()
            elif (error := task.exception()) is not None:
                raise error
        return photos

    async def _load_one(self, photo: _Photo, known: dict[str, list[float]]) -> None:
        try:
            loaded = await self.photos.load(photo.url, known)
        except FetchError as exc:
            photo.error, photo.transient = exc.reason, exc.retryable
            self.metrics.images_failed.labels(exc.reason).inc()
            log.info("image_fetch_failed", url=photo.url, reason=exc.reason, error=str(exc))
            return
        except ImageError as exc:
            photo.error = exc.code
            self.metrics.images_failed.labels(exc.code).inc()
            log.info("image_decode_failed", url=photo.url, reason=exc.code, error=str(exc))
            return
        photo.hash = loaded.hash
        if loaded.image is None:
            photo.vector = list(known[loaded.hash])
            self.metrics.images_reused.inc()
        else:
            photo.image = loaded.image
            self.metrics.images_fetched.inc()

    async def _unavailable(
        self, event: ListingUpserted, message: Incoming, photos: list[_Photo]
    ) -> Outcome:
        reasons = ", ".join(sorted({p.error or "" for p in photos}))
        detail = f"no photo of {event.listing_id} could be used: {reasons}"
        attempt = message.attempt
        if all(p.transient for p in photos) and attempt <= self.policy.max_retries:
            delay = self.policy.retry_delay_s * (2 ** (attempt - 1))
            due = time.time() + delay
            await self.persist.call(
                "broker", lambda: self.retries.send(message, attempt + 1, due, detail)
            )
            self.metrics.count("retried")
            log.info(
                "event_retry_scheduled",
                listing_id=event.listing_id,
                version=event.version,
                attempt=attempt + 1,
                delay_s=delay,
                detail=detail,
            )
            return "retried"
        return await self._dead_letter(message, "images_unavailable", "fetch", detail)

    def _applied(self, event: ListingEvent, outcome: Outcome, failed: int = 0) -> Outcome:
        self.metrics.count(outcome)
        freshness = (datetime.now(UTC) - event.occurred_at).total_seconds()
        self.metrics.freshness.observe(max(freshness, 0.0))
        self.writes_since_optimize += 1
        self.last_write_at = time.monotonic()
        log.debug(
            "listing_applied",
            listing_id=event.listing_id,
            version=event.version,
            outcome=outcome,
            images_failed=failed,
        )
        return outcome

    def _stale(self, event: ListingEvent, applied: int) -> Outcome:
        self.metrics.count("stale")
        log.debug(
            "event_stale", listing_id=event.listing_id, version=event.version, applied=applied
        )
        return "stale"

    async def _dead_letter(
        self, message: Incoming, reason: str, stage: Stage, detail: str
    ) -> Outcome:
        attempts = message.attempt
        await self.persist.call(
            "broker", lambda: self.dead_letters.send(message, reason, stage, attempts, detail)
        )
        self.metrics.dead_lettered(reason, stage)
        log.warning(
            "event_dead_lettered",
            reason=reason,
            stage=stage,
            attempts=attempts,
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            detail=detail[:500],
        )
        return "dead_lettered"


def _known_vectors(stored: StoredListing | None) -> dict[str, list[float]]:
    """Content hash -> stored vector, so an unchanged photo is never embedded twice."""
    if stored is None:
        return {}
    hashes = stored.payload.get("image_hashes") or []
    return dict(zip(hashes, stored.vectors, strict=False))
