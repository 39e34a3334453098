"""The index stays in step through faults: poison events, a hung photo host, a store outage, and
all of them at once in random order. Real broker, real worker, real model, real Edge store."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from models.embedder import Embedder
from models.events import ListingDeleted, ListingUpserted
from models.photos import LoadedPhoto, PhotoPipeline
from models.settings import ModelSettings
from models.store.types import ListingPoint, StoreError, VectorStore
from stream.broker import DevBroker
from stream.publisher import ListingPublisher
from stream.settings import WorkerSettings
from tests.imageserver import ImageServer
from tests.stream_support import (
    Harness,
    deletion,
    fresh_topics,
    generated_photo,
    listing,
    read_topic,
    running_harness,
    wait_until,
    worker_settings,
)

pytestmark = pytest.mark.slow

LONG_LABEL_URL = "http://" + "a" * 64 + ".invalid/x.jpg"
GARBAGE_JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + os.urandom(2048)


@pytest.fixture(scope="module")
def embedder() -> Iterator[Embedder]:
    yield Embedder.from_settings(ModelSettings(device="cpu", embed_batch_size=4))


class FlakyWrites:
    """The real store, except that its writes fail while `failing` is set (an outage)."""

    def __init__(self, store: VectorStore) -> None:
        self._store = store
        self.failing = False
        self.refused = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def _check(self) -> None:
        if self.failing:
            self.refused += 1
            raise StoreError("injected: the store is unreachable")

    async def upsert_listing(self, point: ListingPoint) -> None:
        self._check()
        await self._store.upsert_listing(point)

    async def set_payload(self, listing_id: str, payload: dict[str, Any]) -> None:
        self._check()
        await self._store.set_payload(listing_id, payload)

    async def tombstone(self, listing_id: str, version: int, state: str) -> None:
        self._check()
        await self._store.tombstone(listing_id, version, state)


def _flaky(store: VectorStore) -> VectorStore:
    return FlakyWrites(store)  # type: ignore[return-value]


def _fault_settings(broker: DevBroker, tmp_path: Path) -> WorkerSettings:
    return worker_settings(
        broker,
        fresh_topics(),
        tmp_path,
        fetch_deadline_s=2.0,
        retry_delay_s=1.0,
        max_retries=1,
        infra_backoff_max_s=0.5,
        hole_check_every_s=1.0,
    )


@pytest.fixture
async def harness(
    broker: DevBroker, embedder: Embedder, image_server: ImageServer, tmp_path: Path
) -> AsyncIterator[Harness]:
    settings = _fault_settings(broker, tmp_path)
    async with running_harness(settings, embedder, broker, wrap_store=_flaky) as harness:
        yield harness


@pytest.fixture
async def own_harness(
    embedder: Embedder, image_server: ImageServer, tmp_path: Path
) -> AsyncIterator[Harness]:
    """A harness on a broker of its own, which the test may kill and restart."""
    with DevBroker() as own:
        settings = _fault_settings(own, tmp_path)
        async with running_harness(settings, embedder, own, wrap_store=_flaky) as harness:
            harness.broker = own
            yield harness


def flaky(harness: Harness) -> FlakyWrites:
    store = harness.resources.store
    assert isinstance(store, FlakyWrites)
    return store


async def searchable(harness: Harness, listing_id: str, version: int, timeout_s: float) -> float:
    """Seconds until `listing_id` is stored live at `version`."""
    started = time.monotonic()

    async def stored() -> bool:
        got = await harness.store.get(listing_id)
        return got is not None and not got.tombstone and got.version == version

    await wait_until(stored, timeout_s, f"{listing_id} v{version} to be searchable")
    return time.monotonic() - started


def dead_letters(harness: Harness, n: int) -> dict[bytes, dict[str, str]]:
    letters = read_topic(harness.settings.broker.broker, harness.settings.broker.dlq_topic, n)
    return {m.key(): {h: v.decode() for h, v in m.headers()} for m in letters}


async def test_poison_events_are_dead_lettered_and_the_events_after_them_indexed(
    harness: Harness, image_server: ImageServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    garbage = image_server.add("garbage.jpg", GARBAGE_JPEG)
    exploding = image_server.add("explode.jpg", generated_photo(1))
    good = image_server.add("good.jpg", generated_photo(2))
    real_load = PhotoPipeline.load

    async def load(self: PhotoPipeline, url: str, *args: Any, **kwargs: Any) -> LoadedPhoto:
        if url == exploding:
            raise RuntimeError("injected: preparation blew up")
        return await real_load(self, url, *args, **kwargs)

    monkeypatch.setattr(PhotoPipeline, "load", load)
    harness.publish(
        listing("P-label", 1, [LONG_LABEL_URL]),
        listing("P-garbage", 1, [garbage]),
        listing("P-explode", 1, [exploding]),
        listing("P-good", 1, [good]),
    )
    await searchable(harness, "P-good", 1, 30)
    await harness.drained()
    letters = dead_letters(harness, 3)
    assert set(letters) == {b"P-label", b"P-garbage", b"P-explode"}
    assert letters[b"P-label"]["dlq.reason"] == "images_unavailable"
    assert "bad_url" in letters[b"P-label"]["dlq.detail"]
    assert letters[b"P-garbage"]["dlq.reason"] == "images_unavailable"
    assert letters[b"P-explode"]["dlq.reason"] == "processing_failed"
    assert letters[b"P-explode"]["dlq.stage"] == "fetch"
    assert "injected" in letters[b"P-explode"]["dlq.detail"]
    for headers in letters.values():
        assert headers["dlq.attempts"] == "1"
    for lid in ("P-label", "P-garbage", "P-explode"):
        assert await harness.store.get(lid) is None


async def test_a_hung_photo_host_delays_only_its_own_listing(
    harness: Harness, image_server: ImageServer
) -> None:
    hung = image_server.add("hung.jpg", generated_photo(3), delay_s=3600)
    normal = image_server.add("normal.jpg", generated_photo(4))
    harness.publish(listing("H-hung", 1, [hung]))
    await asyncio.sleep(0.5)
    harness.publish(listing("H-normal", 1, [normal]))
    took = await searchable(harness, "H-normal", 1, 5.0)
    assert took < 5.0
    # The hung one: deadline, one retry round, deadline again, then the dead-letter topic.
    letters = await asyncio.to_thread(dead_letters, harness, 1)
    assert letters[b"H-hung"]["dlq.reason"] == "images_unavailable"
    assert "deadline" in letters[b"H-hung"]["dlq.detail"]
    assert letters[b"H-hung"]["dlq.attempts"] == "2"
    assert harness.metrics.events_total("retried") == 1


async def test_a_store_outage_loses_nothing_and_dead_letters_nothing(
    harness: Harness, image_server: ImageServer
) -> None:
    urls = [image_server.add(f"o/{i}.jpg", generated_photo(10 + i)) for i in range(6)]
    store = flaky(harness)
    store.failing = True
    harness.publish(*(listing(f"O{i}", 1, [u]) for i, u in enumerate(urls)))
    harness.publish(deletion("O0", 2), listing("O1", 2, [urls[1]], amount="5.00"))
    await wait_until(_refused(store, 6), 30, "writes to be refused")
    await asyncio.sleep(2.0)
    assert harness.handled() == 0
    store.failing = False
    for i in range(2, 6):
        await searchable(harness, f"O{i}", 1, 30)
    await searchable(harness, "O1", 2, 30)
    await harness.drained()
    gone = await harness.store.get("O0")
    assert gone is not None and gone.tombstone
    assert harness.metrics.events_total("dead_lettered") == 0
    assert await harness.store.count() == 5


def _refused(store: FlakyWrites, n: int) -> Any:
    async def check() -> bool:
        return store.refused >= n

    return check


async def test_chaos_the_index_ends_equal_to_the_catalog(
    own_harness: Harness, image_server: ImageServer
) -> None:
    """Poison events, hung and flaky hosts, store outages, a broker restart and stale replays, in
    random order, over a stream of edits; at the end every listing is at its latest version,
    deleted ones absent, none stale, none lost."""
    harness = own_harness
    seed = int(os.environ.get("LOOKALIKE_CHAOS_SEED", str(random.randrange(10**6))))
    rng = random.Random(seed)
    store = flaky(harness)
    photos = [image_server.add(f"c/{i}.jpg", generated_photo(100 + i)) for i in range(40)]
    hung = image_server.add("c/hung.jpg", generated_photo(99), delay_s=3600)
    flaky_host = image_server.add("c/flaky.jpg", generated_photo(98), fail_first=2)
    events: list[ListingUpserted | ListingDeleted] = []
    versions: dict[str, int] = {}

    def edit(lid: str) -> ListingUpserted | ListingDeleted:
        versions[lid] = versions.get(lid, 0) + 1
        if versions[lid] > 1 and rng.random() < 0.2:
            return deletion(lid, versions[lid])
        amount = f"{rng.randrange(1, 500)}.00"
        return listing(lid, versions[lid], rng.sample(photos, rng.randint(1, 2)), amount=amount)

    async def outage() -> None:
        store.failing = True
        await asyncio.sleep(rng.uniform(0.5, 2.0))
        store.failing = False

    async def poison() -> None:
        harness.publish_raw(b"bad", b"{not json")
        harness.publish(listing("Z-label", 1, [LONG_LABEL_URL]))

    async def hang() -> None:
        harness.publish(listing("Z-hung", 1, [hung]))

    async def flake() -> None:
        versions["F1"] = versions.get("F1", 0) + 1
        event = listing("F1", versions["F1"], [flaky_host])
        events.append(event)
        harness.publish(event)

    async def broker_restart() -> None:
        # At a quiet point: what the broker loses then was indexed already (events it loses
        # before they are read are lost to every consumer; that is the dev broker's limit).
        await harness.drained(60)
        await asyncio.sleep(0.5)
        harness.broker.kill()
        await asyncio.sleep(rng.uniform(0.5, 2.0))
        await asyncio.to_thread(harness.broker.start)
        # An idempotent producer's sequence state died with the broker: a new producer, as a
        # restarted publisher would be. The worker itself carries on.
        harness.publisher.close()
        harness.publisher = ListingPublisher(
            harness.broker.bootstrap, harness.settings.broker.topic
        )

    async def stale() -> None:
        # A replay of an old event (a rebalance, a restarted producer) changes nothing.
        old = [e for e in events if versions[e.listing_id] > e.version]
        if old:
            harness.publish(rng.choice(old))

    faults = [outage, poison, hang, flake, broker_restart, stale]
    rng.shuffle(faults)
    started = time.monotonic()
    for fault in faults:
        for _ in range(8):
            event = edit(f"K{rng.randrange(12)}")
            events.append(event)
            harness.publish(event)
        await fault()
    assert time.monotonic() - started < 90

    expected: dict[str, ListingUpserted | ListingDeleted] = {}
    for event in events:
        if event.version >= expected.get(event.listing_id, event).version:
            expected[event.listing_id] = event

    async def converged() -> bool:
        for lid, event in expected.items():
            got = await harness.store.get(lid)
            if isinstance(event, ListingDeleted):
                if got is None or not got.tombstone or got.version != event.version:
                    return False
            elif got is None or got.tombstone or got.version != event.version:
                return False
        return True

    await wait_until(converged, 90, f"the index to equal the catalog (seed {seed})")
    live = {s.listing_id: s async for s in harness.store.scroll()}
    want = {lid for lid, e in expected.items() if isinstance(e, ListingUpserted)}
    assert set(live) == want, f"seed {seed}"
    for lid in want:
        event = expected[lid]
        assert isinstance(event, ListingUpserted)
        assert live[lid].payload["price_amount"] == str(event.price.amount), (lid, seed)
        assert live[lid].payload["image_urls"] == event.image_urls, (lid, seed)
