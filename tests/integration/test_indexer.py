"""The indexer end to end: real Tansu broker, real Faust worker, real model, real Edge store, real
image server. Verified through the store's own search."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from models.embedder import Embedder
from models.settings import ModelSettings
from stream.broker import DevBroker
from tests.imageserver import ImageServer
from tests.photos import photo_bytes
from tests.stream_support import (
    Harness,
    deletion,
    fresh_topics,
    listing,
    read_topic,
    running_harness,
    worker_settings,
)

pytestmark = pytest.mark.slow

PHOTOS = ["chelsea", "coffee", "astronaut", "rocket", "motorcycle", "china", "flower"]


@pytest.fixture(scope="module")
def embedder() -> Iterator[Embedder]:
    yield Embedder.from_settings(ModelSettings(device="cpu", embed_batch_size=4))


@pytest.fixture
async def harness(
    broker: DevBroker, embedder: Embedder, image_server: ImageServer, tmp_path: Path
) -> AsyncIterator[Harness]:
    settings = worker_settings(broker, fresh_topics(), tmp_path)
    async with running_harness(settings, embedder, broker) as harness:
        yield harness


async def test_catalog_lifecycle_is_mirrored_in_the_index(
    harness: Harness, image_server: ImageServer
) -> None:
    urls = {name: image_server.add(f"{name}.jpg", photo_bytes(name)) for name in PHOTOS}
    # Five listings, L0..L4, one photo each (L0 has two).
    harness.publish(
        listing("L0", 1, [urls["chelsea"], urls["coffee"]], amount="12.00"),
        listing("L1", 1, [urls["astronaut"]]),
        listing("L2", 1, [urls["rocket"]]),
        listing("L3", 1, [urls["motorcycle"]]),
        listing("L4", 1, [urls["china"]]),
    )
    await harness.drained()
    assert await harness.store.count() == 5
    for name, expected in [
        ("chelsea", "L0"),
        ("coffee", "L0"),
        ("astronaut", "L1"),
        ("rocket", "L2"),
        ("motorcycle", "L3"),
        ("china", "L4"),
    ]:
        top = await harness.top(photo_bytes(name))
        assert top is not None and top[0] == expected, (name, top)

    # New photos for L1: the old photo stops matching it, the new one does.
    harness.publish(listing("L1", 2, [urls["flower"]]))
    await harness.drained()
    old = await harness.top(photo_bytes("astronaut"))
    assert old is not None and old[0] != "L1"
    new = await harness.top(photo_bytes("flower"))
    assert new is not None and new[0] == "L1"

    # Price-only update: the payload changes, and no image is fetched again.
    requests_before = len(image_server.requests)
    harness.publish(listing("L0", 2, [urls["chelsea"], urls["coffee"]], amount="99.50"))
    await harness.drained()
    stored = await harness.store.get("L0")
    assert stored is not None
    assert stored.payload["price_amount"] == "99.50"
    assert stored.payload["price"] == pytest.approx(99.5)
    assert stored.payload["version"] == 2
    assert len(image_server.requests) == requests_before
    assert harness.metrics.events_total("payload_only") == 1

    # Delete: gone from the store and from search results.
    harness.publish(deletion("L2", 2))
    await harness.drained()
    gone = await harness.store.get("L2")
    assert gone is not None and gone.tombstone and gone.version == 2
    top = await harness.top(photo_bytes("rocket"))
    assert top is None or top[0] != "L2"

    # A listing that is no longer active leaves the index too.
    harness.publish(listing("L3", 2, [urls["motorcycle"]], state="sold_out"))
    await harness.drained()
    sold = await harness.store.get("L3")
    assert sold is not None and sold.tombstone and sold.payload["state"] == "sold_out"

    # Late events: an older version after a newer one, and after a delete, change nothing.
    stale_before = harness.metrics.events_total("stale")
    harness.publish(
        listing("L1", 1, [urls["astronaut"]], amount="1.00"),
        listing("L2", 1, [urls["rocket"]]),
        listing("L0", 2, [urls["chelsea"]], amount="5.00"),  # a duplicate version number
    )
    await harness.drained()
    assert harness.metrics.events_total("stale") == stale_before + 3
    l1 = await harness.store.get("L1")
    assert l1 is not None and l1.payload["version"] == 2
    assert l1.payload["image_urls"] == [urls["flower"]]
    l2 = await harness.store.get("L2")
    assert l2 is not None and l2.tombstone
    l0 = await harness.store.get("L0")
    assert l0 is not None and l0.payload["price_amount"] == "99.50"
    assert await harness.store.count() == 3  # L0, L1, L4


async def test_duplicate_delivery_leaves_one_point(
    harness: Harness, image_server: ImageServer
) -> None:
    url = image_server.add("coffee.jpg", photo_bytes("coffee"))
    event = listing("D1", 3, [url], amount="7.00")
    harness.publish(event)
    await harness.drained()
    # The same event delivered again (a redelivery after a rebalance looks exactly like this).
    harness.publish(event, event)
    await harness.drained()
    assert await harness.store.count() == 1
    stored = await harness.store.get("D1", with_vectors=True)
    assert stored is not None and len(stored.vectors) == 1
    assert harness.metrics.events_total("indexed") == 1
    assert harness.metrics.events_total("stale") == 2
    assert image_server.count("coffee.jpg") == 1


async def test_partial_image_failures_index_the_photos_that_worked(
    harness: Harness, image_server: ImageServer
) -> None:
    good = image_server.add("rocket.jpg", photo_bytes("rocket"))
    missing = image_server.url("nowhere.jpg")
    broken = image_server.add("broken.jpg", b"these bytes are not an image")
    harness.publish(listing("P1", 1, [missing, good, broken]))
    await harness.drained()
    stored = await harness.store.get("P1", with_vectors=True)
    assert stored is not None
    assert stored.payload["image_urls"] == [good]
    assert stored.payload["source_image_urls"] == [missing, good, broken]
    assert len(stored.vectors) == 1
    failed = harness.metrics.registry.get_sample_value
    assert failed("lookalike_indexer_images_failed_total", {"reason": "http_status"}) == 1
    assert failed("lookalike_indexer_images_failed_total", {"reason": "not_an_image"}) == 1
    assert failed("lookalike_indexer_images_fetched_total") == 1


async def test_invalid_events_are_dead_lettered_and_the_stream_goes_on(
    harness: Harness, image_server: ImageServer, broker: DevBroker
) -> None:
    good = image_server.add("china.jpg", photo_bytes("china"))
    missing = [image_server.url(f"gone/{i}.jpg") for i in range(2)]
    not_json = b"{this is not json"
    invalid = b'{"type": "listing.upserted", "listing_id": "X1", "version": -1}'
    harness.publish_raw(b"X0", not_json)
    harness.publish_raw(b"X1", invalid)
    all_404 = listing("X2", 1, missing)
    harness.publish(all_404)
    harness.publish(listing("OK1", 1, [good]))
    await harness.drained()

    assert await harness.store.get("OK1") is not None
    assert await harness.store.get("X2") is None  # a 404 is no transient failure: never retried
    assert harness.metrics.events_total("dead_lettered") == 3

    letters = read_topic(broker.bootstrap, harness.settings.broker.dlq_topic, 3)
    by_key = {m.key(): m for m in letters}
    assert set(by_key) == {b"X0", b"X1", b"X2"}
    headers = {k: {h: v.decode() for h, v in m.headers()} for k, m in by_key.items()}
    assert by_key[b"X0"].value() == not_json
    assert headers[b"X0"]["dlq.reason"] == "not_json"
    assert headers[b"X0"]["dlq.stage"] == "parse"
    assert by_key[b"X1"].value() == invalid
    assert headers[b"X1"]["dlq.reason"] == "invalid_event"
    assert "version" in headers[b"X1"]["dlq.detail"]
    assert headers[b"X2"]["dlq.reason"] == "images_unavailable"
    assert headers[b"X2"]["dlq.stage"] == "fetch"
    assert headers[b"X2"]["dlq.attempts"] == "1"  # a 404 is fetched once, and said so
    for h in headers.values():
        assert h["dlq.topic"] == harness.settings.broker.topic
        assert int(h["dlq.offset"]) >= 0
