"""A worker process rides out its broker: SIGKILLed and restarted empty on the same port (Tansu
keeps its log in memory), the worker reconnects, takes up the new log, indexes what is published
after the restart, never exits, and stops on SIGTERM within 10 s."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from models.embedder import Embedder
from models.settings import ModelSettings
from models.store.edge import EdgeStore, copy_shard
from models.store.factory import collection_name_for
from models.store.types import StoreError
from stream.broker import DevBroker
from stream.publisher import ListingPublisher
from stream.settings import WorkerSettings
from tests.imageserver import ImageServer
from tests.stream_support import (
    fresh_topics,
    generated_photo,
    listing,
    start_worker,
    wait_until,
    worker_settings,
)

pytestmark = pytest.mark.slow

SHUTDOWN_S = 10.0


@pytest.fixture
def own_broker() -> Iterator[DevBroker]:
    """A broker of this test alone: it is killed and restarted on the same port."""
    with DevBroker() as started:
        yield started


def publish(settings: WorkerSettings, events: list[object]) -> None:
    with ListingPublisher(settings.broker.broker, settings.broker.topic) as publisher:
        publisher.publish_many(events)  # type: ignore[arg-type]


async def indexed(settings: WorkerSettings, embedder: Embedder, scratch: Path) -> set[str]:
    """The live listings, read from a copy of the shard: the worker holds the shard itself."""
    name = collection_name_for(settings.store.collection_alias, embedder.model_id)
    into = scratch / uuid.uuid4().hex
    try:
        await asyncio.to_thread(copy_shard, settings.store.index_path, name, into)
        store = EdgeStore(into, settings.store.collection_alias, name, embedder.dim)
        await store.ensure_collection()
        try:
            return {s.listing_id async for s in store.scroll()}
        finally:
            await store.close()
    except (OSError, StoreError):
        return set()  # not created yet, or copied mid-write: look again
    finally:
        await asyncio.to_thread(shutil.rmtree, into, True)


async def test_the_worker_rides_out_a_broker_that_restarts_empty(
    own_broker: DevBroker, image_server: ImageServer, tmp_path: Path
) -> None:
    settings = worker_settings(own_broker, fresh_topics(), tmp_path)
    urls = [image_server.add(f"b/{i}.jpg", generated_photo(200 + i)) for i in range(20)]
    log_path = tmp_path / "worker.log"
    embedder = Embedder.from_settings(ModelSettings(device="cpu"))
    with log_path.open("ab") as log:
        worker = start_worker(settings, log)
        try:

            def alive() -> None:
                assert worker.poll() is None, log_path.read_text()[-4000:]

            first = [listing(f"B{i}", 1, [urls[i]]) for i in range(5)]
            await asyncio.to_thread(publish, settings, first)

            async def first_indexed() -> bool:
                alive()
                return len(await indexed(settings, embedder, tmp_path)) >= 5

            await wait_until(first_indexed, 90, "the first events to be indexed")

            own_broker.kill()
            await asyncio.sleep(3)
            alive()
            await asyncio.to_thread(own_broker.start)
            restarted = time.monotonic()
            later = [listing(f"B{i}", 1, [urls[i]]) for i in range(5, 20)]
            await asyncio.to_thread(publish, settings, later)

            async def all_indexed() -> bool:
                alive()
                return len(await indexed(settings, embedder, tmp_path)) >= 20

            await wait_until(all_indexed, 60, "the events published after the restart")
            assert time.monotonic() - restarted < 60
            assert "broker_log_lost" in log_path.read_text()
        finally:
            started = time.monotonic()
            worker.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(worker.wait, SHUTDOWN_S)
            except subprocess.TimeoutExpired:
                worker.kill()
                await asyncio.to_thread(worker.wait, 10)
                raise AssertionError(f"SIGTERM took over {SHUTDOWN_S}s") from None
        assert time.monotonic() - started < SHUTDOWN_S
        assert worker.returncode == 0, log_path.read_text()[-4000:]


async def test_sigterm_ends_the_worker_within_10_s_while_its_broker_is_down(
    own_broker: DevBroker, image_server: ImageServer, tmp_path: Path
) -> None:
    settings = worker_settings(own_broker, fresh_topics(), tmp_path)
    slow = [image_server.add(f"s/{i}.jpg", generated_photo(300 + i), delay_s=2) for i in range(8)]
    log_path = tmp_path / "worker.log"
    with log_path.open("ab") as log:
        worker = start_worker(settings, log)
        try:
            events = [listing(f"S{i}", 1, [slow[i]]) for i in range(8)]
            await asyncio.to_thread(publish, settings, events)

            async def fetching() -> bool:
                assert worker.poll() is None, log_path.read_text()[-4000:]
                return len(image_server.requests) >= 2

            # Events are in flight (acks and commits pending) when the broker dies.
            await wait_until(fetching, 90, "the worker to be fetching photos")
            own_broker.kill()
            await asyncio.sleep(3)
            started = time.monotonic()
            worker.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(worker.wait, SHUTDOWN_S)
            except subprocess.TimeoutExpired:
                raise AssertionError(
                    f"SIGTERM took over {SHUTDOWN_S}s with the broker down"
                ) from None
            assert time.monotonic() - started < SHUTDOWN_S
            assert worker.returncode == 0, log_path.read_text()[-4000:]
        finally:
            if worker.poll() is None:
                worker.kill()
                await asyncio.to_thread(worker.wait, 10)
