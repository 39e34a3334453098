"""ListingIndexer on fakes of its ports: version guard, dead letters, retries, deadlines."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Container
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from PIL import Image

from models.events import ListingUpserted
from models.fetch import ConnectionFailed, FetchTimeout, HTTPStatusError
from models.images import NotAnImage
from models.photos import LoadedPhoto
from models.store.types import ListingPoint, StoredListing, StoreError
from stream.indexer import ATTEMPT_HEADER, Incoming, IndexerPolicy, ListingIndexer
from stream.metrics import WorkerMetrics
from stream.persist import Persistence
from tests.stream_support import deletion
from tests.stream_support import listing as listing_event

DIM = 4


def url(name: str) -> str:
    return f"http://img.test/{name}"


def listing(listing_id: str, version: int, names: list[str], **kw: Any) -> ListingUpserted:
    """An upsert whose photos are named; FakePhotos answers by name."""
    return listing_event(listing_id, version, [url(n) for n in names], **kw)


@dataclass
class FakeStore:
    """In-memory store with the real engines' conditional-write semantics."""

    points: dict[str, StoredListing] = field(default_factory=dict)
    failures: int = 0
    calls: int = 0

    def _fail(self) -> None:
        self.calls += 1
        if self.failures > 0:
            self.failures -= 1
            raise StoreError("store unreachable (injected)")

    def _newer(self, listing_id: str, version: int) -> bool:
        stored = self.points.get(listing_id)
        return stored is None or stored.version is None or stored.version < version

    async def get(self, listing_id: str, with_vectors: bool = False) -> StoredListing | None:
        self._fail()
        return self.points.get(listing_id)

    async def upsert_listing(self, point: ListingPoint) -> None:
        self._fail()
        if self._newer(point.listing_id, point.payload["version"]):
            self.points[point.listing_id] = StoredListing(
                point.listing_id, dict(point.payload), [list(v) for v in point.vectors]
            )

    async def set_payload(self, listing_id: str, payload: dict[str, Any]) -> None:
        self._fail()
        stored = self.points.get(listing_id)
        live = stored is not None and not stored.tombstone
        if stored is not None and live and self._newer(listing_id, payload["version"]):
            self.points[listing_id] = StoredListing(
                listing_id, {**stored.payload, **payload}, stored.vectors
            )

    async def tombstone(self, listing_id: str, version: int, state: str) -> None:
        self._fail()
        if self._newer(listing_id, version):
            payload = {"listing_id": listing_id, "version": version, "state": state}
            payload |= {"tombstone": True, "tombstoned_at": time.time()}
            self.points[listing_id] = StoredListing(listing_id, payload, [[1.0, 0, 0, 0]])

    def live(self) -> dict[str, int]:
        return {k: v.version or 0 for k, v in self.points.items() if not v.tombstone}


class FakePhotos:
    """url -> behaviour: bytes (a photo with that content), an exception, or "hang"."""

    def __init__(self, behaviour: dict[str, Any]) -> None:
        self.behaviour = behaviour
        self.loads: list[str] = []

    async def load(self, url: str, known: Container[str] = ()) -> LoadedPhoto:
        name = url.rsplit("/", 1)[1]
        self.loads.append(name)
        what = self.behaviour.get(name, name.encode())
        if what == "hang":
            await asyncio.sleep(3600)
        if isinstance(what, BaseException):
            raise what
        digest = f"h-{what.decode()}"
        image = None if digest in known else Image.new("RGB", (8, 8))
        return LoadedPhoto(url=url, hash=digest, image=image)


@dataclass
class Sent:
    dead: list[tuple[Incoming, str, str, int, str]] = field(default_factory=list)
    broker_failures: int = 0

    async def send(
        self, message: Incoming, reason: str, stage: str, attempts: int, detail: str
    ) -> None:
        if self.broker_failures:
            self.broker_failures -= 1
            raise OSError("broker unreachable (injected)")
        self.dead.append((message, reason, stage, attempts, detail))


@dataclass
class Retried:
    sent: list[tuple[Incoming, int, float]] = field(default_factory=list)

    async def send(self, message: Incoming, attempt: int, due: float, reason: str) -> None:
        self.sent.append((message, attempt, due))


class Harness:
    def __init__(self, photos: dict[str, Any] | None = None, **policy: Any) -> None:
        self.store = FakeStore()
        self.photos = FakePhotos(photos or {})
        self.dead = Sent()
        self.retries = Retried()
        self.embedded = 0
        self.metrics = WorkerMetrics()
        self.indexer = ListingIndexer(
            store=self.store,
            embed=self.embed,
            model_id="m1",
            photos=self.photos,
            dead_letters=self.dead,
            retries=self.retries,
            metrics=self.metrics,
            persist=Persistence(infra_errors=(StoreError, OSError), first_delay_s=0.001),
            policy=IndexerPolicy(**{"fetch_deadline_s": 0.5, **policy}),
        )
        self.offset = 0

    async def embed(self, image: Image.Image) -> np.ndarray:
        self.embedded += 1
        return np.ones(DIM, dtype=np.float32) / 2

    def message(self, value: bytes, headers: list[tuple[str, bytes]] | None = None) -> Incoming:
        self.offset += 1
        return Incoming(b"k", value, headers or [], "listings", 0, self.offset)

    async def send(self, event: Any, headers: list[tuple[str, bytes]] | None = None) -> str:
        raw = event if isinstance(event, bytes) else event.model_dump_json().encode()
        return await self.indexer.handle(self.message(raw, headers))


async def test_an_older_or_equal_version_changes_nothing() -> None:
    h = Harness()
    assert await h.send(listing("A", 5, ["u1"], amount="9.00")) == "indexed"
    assert await h.send(listing("A", 3, ["u2"], amount="0.01")) == "stale"
    assert await h.send(listing("A", 5, ["u2"], amount="0.01")) == "stale"
    assert h.store.points["A"].payload["price_amount"] == "9.00"
    assert h.photos.loads == ["u1"]


async def test_a_deletion_leaves_a_tombstone_that_older_upserts_cannot_pass() -> None:
    h = Harness()
    await h.send(listing("A", 1, ["u1"]))
    assert await h.send(deletion("A", 2)) == "deleted"
    assert await h.send(listing("A", 1, ["u1"])) == "stale"
    assert h.store.points["A"].tombstone and h.store.points["A"].version == 2
    assert await h.send(listing("A", 3, ["u1"])) == "indexed"
    assert h.store.live() == {"A": 3}


async def test_a_non_active_listing_is_a_tombstone_with_its_state() -> None:
    h = Harness()
    await h.send(listing("A", 1, ["u1"]))
    assert await h.send(listing("A", 2, ["u1"], state="sold_out")) == "deleted"
    assert h.store.points["A"].payload["state"] == "sold_out"
    assert h.store.live() == {}


async def test_a_metadata_change_sets_the_payload_without_fetching() -> None:
    h = Harness()
    await h.send(listing("A", 1, ["u1", "u2"]))
    assert await h.send(listing("A", 2, ["u1", "u2"], amount="99.00")) == "payload_only"
    assert h.photos.loads == ["u1", "u2"]
    assert h.store.points["A"].payload["price_amount"] == "99.00"
    assert h.store.points["A"].version == 2


async def test_an_unchanged_photo_is_not_embedded_again() -> None:
    h = Harness()
    await h.send(listing("A", 1, ["u1"]))
    assert await h.send(listing("A", 2, ["u1", "u2"])) == "indexed"
    assert h.embedded == 2  # u1 once, u2 once
    assert len(h.store.points["A"].vectors) == 2


async def test_malformed_events_are_dead_lettered_with_their_reason() -> None:
    h = Harness()
    assert await h.send(b"{not json") == "dead_lettered"
    message, reason, stage, attempts, _ = h.dead.dead[0]
    assert (reason, stage, attempts) == ("not_json", "parse", 1)
    assert message.value == b"{not json"


async def test_permanent_photo_failures_are_dead_lettered_after_one_attempt() -> None:
    h = Harness({"u1": HTTPStatusError(404, url("u1")), "u2": NotAnImage("bad bytes")})
    assert await h.send(listing("A", 1, ["u1", "u2"])) == "dead_lettered"
    _, reason, stage, attempts, detail = h.dead.dead[0]
    assert (reason, stage, attempts) == ("images_unavailable", "fetch", 1)
    assert "http_status" in detail and "not_an_image" in detail
    assert h.retries.sent == []


async def test_an_unexpected_error_in_preparation_is_dead_lettered_and_the_next_event_goes_on() -> (
    None
):
    h = Harness({"bad": UnicodeError("label too long")})
    assert await h.send(listing("A", 1, ["bad"])) == "dead_lettered"
    _, reason, stage, _, detail = h.dead.dead[0]
    assert (reason, stage) == ("processing_failed", "fetch")
    assert "UnicodeError" in detail
    assert await h.send(listing("B", 1, ["u1"])) == "indexed"


async def test_transient_failures_go_to_the_retry_topic_then_to_the_dead_letters() -> None:
    h = Harness({"u1": FetchTimeout("timed out", url("u1"))}, max_retries=2, retry_delay_s=10.0)
    before = time.time()
    assert await h.send(listing("A", 1, ["u1"])) == "retried"
    message, attempt, due = h.retries.sent[-1]
    assert attempt == 2 and due >= before + 10.0
    assert await h.send(message.value, [(ATTEMPT_HEADER, b"2")]) == "retried"
    assert h.retries.sent[-1][1] == 3 and h.retries.sent[-1][2] >= before + 20.0
    assert await h.send(message.value, [(ATTEMPT_HEADER, b"3")]) == "dead_lettered"
    assert h.dead.dead[0][3] == 3


async def test_a_mix_of_transient_and_permanent_failures_is_not_retried() -> None:
    refused, gone = ConnectionFailed("refused", url("u1")), HTTPStatusError(410, url("u2"))
    h = Harness({"u1": refused, "u2": gone})
    assert await h.send(listing("A", 1, ["u1", "u2"])) == "dead_lettered"


async def test_a_retried_older_event_loses_to_a_newer_one_and_to_a_deletion() -> None:
    h = Harness()
    await h.send(listing("A", 2, ["u1"]))
    retried = listing("A", 1, ["u9"]).model_dump_json().encode()
    assert await h.send(retried, [(ATTEMPT_HEADER, b"2")]) == "stale"
    await h.send(deletion("B", 5))
    assert await h.send(listing("B", 4, ["u1"]), [(ATTEMPT_HEADER, b"2")]) == "stale"
    assert h.store.live() == {"A": 2}


async def test_a_hung_photo_host_costs_one_listing_its_deadline_only() -> None:
    h = Harness({"slow": "hang"}, fetch_deadline_s=0.3, max_retries=1)
    started = time.monotonic()
    outcome = await h.send(listing("A", 1, ["slow", "u1"]))
    took = time.monotonic() - started
    assert outcome == "indexed" and 0.3 <= took < 2.0
    assert h.store.points["A"].payload["image_urls"] == [url("u1")]
    assert await h.send(listing("B", 1, ["slow"])) == "retried"


async def test_a_store_outage_is_waited_out_never_dead_lettered() -> None:
    h = Harness()
    h.store.failures = 5
    assert await h.send(listing("A", 1, ["u1"])) == "indexed"
    assert h.dead.dead == [] and h.store.live() == {"A": 1}
    assert h.store.calls >= 7


async def test_a_broker_outage_delays_the_dead_letter_but_loses_it_not() -> None:
    h = Harness()
    h.dead.broker_failures = 3
    assert await h.send(b"[]") == "dead_lettered"
    assert len(h.dead.dead) == 1


async def test_an_outage_waits_until_cancelled() -> None:
    h = Harness()
    h.store.failures = 10**9
    task = asyncio.ensure_future(h.send(listing("A", 1, ["u1"])))
    await asyncio.sleep(0.1)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert h.dead.dead == []
