"""Crash safety: a worker process SIGKILLed mid-stream and started again ends with the index
exactly equal to the catalog the events describe: nothing lost, nothing stale."""

from __future__ import annotations

import asyncio
import io
import signal
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from models.embedder import Embedder
from models.events import ListingDeleted, ListingUpserted
from models.settings import ModelSettings
from models.store.factory import open_store
from stream.broker import DevBroker
from stream.publisher import ListingPublisher
from stream.settings import WorkerSettings
from tests.imageserver import ImageServer
from tests.stream_support import (
    PARTITIONS,
    deletion,
    fresh_topics,
    generated_photo,
    group_caught_up,
    group_committed,
    listing,
    start_worker,
    wait_until,
    worker_settings,
)

pytestmark = pytest.mark.slow


def committed_offsets(settings: WorkerSettings) -> dict[int, int]:
    b = settings.broker
    return group_committed(b.broker, settings.stream.group_id, b.topic, PARTITIONS)


def committed_all(settings: WorkerSettings, end_offsets: dict[int, int]) -> bool:
    b = settings.broker
    return group_caught_up(b.broker, settings.stream.group_id, b.topic, PARTITIONS, end_offsets)


def final_catalog(events: list[ListingUpserted | ListingDeleted]) -> dict[str, ListingUpserted]:
    """What the index must hold: per listing, its newest event, if that is an active upsert."""
    newest: dict[str, ListingUpserted | ListingDeleted] = {}
    for event in events:
        seen = newest.get(event.listing_id)
        if seen is None or event.version > seen.version:
            newest[event.listing_id] = event
    return {lid: e for lid, e in newest.items() if isinstance(e, ListingUpserted) and e.searchable}


async def test_sigkill_mid_stream_then_restart_converges_to_the_catalog(
    broker: DevBroker, image_server: ImageServer, tmp_path: Path
) -> None:
    settings = worker_settings(broker, fresh_topics(), tmp_path, max_in_flight=4)
    # A small delay per image so the stream is still in flight when the worker is killed.
    url = {i: image_server.add(f"p/{i}.jpg", generated_photo(i), delay_s=0.05) for i in range(60)}
    n = 24
    events: list[ListingUpserted | ListingDeleted] = [
        listing(f"C{i}", 1, [url[i]], amount=f"{i}.00") for i in range(n)
    ]
    events += [listing(f"C{i}", 2, [url[30 + i]], amount=f"{i}.50") for i in range(0, n, 2)]
    events += [listing(f"C{i}", 3, [url[30 + i]], amount="1.99") for i in range(0, n, 4)]
    events += [deletion(f"C{i}", 4) for i in range(1, n, 6)]
    events += [listing(f"C{i}", 1, [url[i]], amount="0.01") for i in range(0, n, 3)]  # stale
    events += [listing(f"C{i}", 2, [url[i]], state="inactive") for i in range(3, n, 8)]
    expected = final_catalog(events)

    with ListingPublisher(broker.bootstrap, settings.broker.topic) as publisher:
        publisher.publish_many(events)
    ends = publisher.end_offsets
    assert sum(ends.values()) == len(events)

    log_path = tmp_path / "worker.log"
    with log_path.open("ab") as log:
        first = start_worker(settings, log)
        try:
            total_images = n + n // 2

            async def some_images_fetched() -> bool:
                assert first.poll() is None, log_path.read_text()[-3000:]
                return len(image_server.requests) >= total_images // 3

            await wait_until(some_images_fetched, 120, "the first worker to be mid-stream")
        finally:
            first.send_signal(signal.SIGKILL)
            await asyncio.to_thread(first.wait, 10)
        assert not committed_all(settings, ends), "the kill came too late to test anything"

        second = start_worker(settings, log)
        try:

            async def caught_up() -> bool:
                assert second.poll() is None, log_path.read_text()[-3000:]
                return await asyncio.to_thread(committed_all, settings, ends)

            try:
                await wait_until(caught_up, 60, "the restarted worker to commit every event")
            except AssertionError as exc:
                # Faust dumps every task's stack to the log on SIGUSR1: the post-mortem of a stall.
                second.send_signal(signal.SIGUSR1)
                await asyncio.sleep(3)
                raise AssertionError(f"{exc}: {committed_offsets(settings)} of {ends}") from exc
        finally:
            # Waited for off the loop: the image server shares this loop and must keep answering.
            second.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(second.wait, 30)
            except subprocess.TimeoutExpired:
                second.kill()
                await asyncio.to_thread(second.wait, 10)
        assert second.returncode == 0, log_path.read_text()[-3000:]

    embedder = Embedder.from_settings(ModelSettings(device="cpu"))
    store = open_store(settings.store, embedder.model_id, embedder.dim)
    await store.ensure_collection()
    try:
        stored = {s.listing_id: s async for s in store.scroll(with_vectors=True)}
        tombstones = {s.listing_id: s async for s in store.scroll(include_tombstones=True)}
        assert set(stored) == set(expected)
        for lid, event in expected.items():
            payload = stored[lid].payload
            assert payload["version"] == event.version, lid
            assert payload["price_amount"] == str(event.price.amount), lid
            assert payload["image_urls"] == event.image_urls, lid
            assert len(stored[lid].vectors) == len(event.image_urls), lid
        # Every listing that is gone keeps its newest version as a tombstone.
        for lid in set(tombstones) - set(expected):
            assert tombstones[lid].tombstone, lid
            assert tombstones[lid].version == max(e.version for e in events if e.listing_id == lid)
        # The vectors are the photos': each listing is found by its own current photo.
        for lid, event in list(expected.items())[:6]:
            image_index = int(event.image_urls[0].rsplit("/", 1)[1].split(".")[0])
            photo = Image.open(io.BytesIO(generated_photo(image_index))).convert("RGB")
            vector = embedder.embed([photo])[0].tolist()
            hits = await store.search([vector], k=1)
            assert hits and hits[0].listing_id == lid
    finally:
        await store.close()
