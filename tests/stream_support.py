"""Helpers for the stream tests: catalog events, per-test topics, waiting and reading topics."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import numpy as np
from confluent_kafka import Consumer, TopicPartition
from PIL import Image

from models.embedder import AsyncEmbedder, Embedder
from models.events import ImageRef, ListingDeleted, ListingState, ListingUpserted, Price
from models.settings import BrokerSettings, FetchSettings, ModelSettings, StoreSettings
from models.store.types import VectorStore
from stream.broker import DevBroker
from stream.metrics import OUTCOMES, WorkerMetrics
from stream.publisher import ListingPublisher
from stream.resources import WorkerResources
from stream.settings import StreamSettings, WorkerSettings
from stream.worker import running_worker

PARTITIONS = 2
REPO = Path(__file__).resolve().parents[1]


def listing(
    listing_id: str,
    version: int,
    urls: list[str],
    *,
    amount: str = "10.00",
    state: ListingState = "active",
    title: str | None = None,
    category: str = "home/kitchen/mugs",
) -> ListingUpserted:
    return ListingUpserted(
        listing_id=listing_id,
        version=version,
        occurred_at=datetime.now(UTC),
        state=state,
        title=title or f"listing {listing_id}",
        category=category,
        price=Price(amount=Decimal(amount), currency="USD"),
        shop_id="S1",
        images=[ImageRef(url=u) for u in urls],
    )


def deletion(listing_id: str, version: int) -> ListingDeleted:
    return ListingDeleted(listing_id=listing_id, version=version, occurred_at=datetime.now(UTC))


def generated_photo(seed: int, size: tuple[int, int] = (320, 240)) -> bytes:
    """A distinct synthetic JPEG per seed: random coloured blocks, upscaled (not white noise)."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    img = Image.fromarray(blocks).resize(size, Image.Resampling.BICUBIC)
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=90)
    return out.getvalue()


@dataclass(frozen=True)
class StreamTopics:
    """Topics and group of one test, so tests sharing a broker never see each other's events."""

    listings: str
    dlq: str
    retry: str
    group_id: str


def fresh_topics() -> StreamTopics:
    tag = uuid.uuid4().hex[:8]
    return StreamTopics(
        f"listings-{tag}", f"listings-{tag}.dlq", f"listings-{tag}.retry", f"indexer-{tag}"
    )


def worker_settings(
    broker: DevBroker, topics: StreamTopics, data_dir: Path, **stream: Any
) -> WorkerSettings:
    """Settings for a worker on these topics, an Edge index under data_dir, loopback images allowed;
    the topics are created here."""
    settings = WorkerSettings(
        stream=StreamSettings(
            group_id=topics.group_id, data_dir=str(data_dir / "worker"), **stream
        ),
        broker=BrokerSettings(
            broker=broker.bootstrap,
            topic=topics.listings,
            dlq_topic=topics.dlq,
            retry_topic=topics.retry,
            topic_partitions=PARTITIONS,
        ),
        model=ModelSettings(device="cpu", embed_batch_size=4),
        fetch=FetchSettings(allow_private_image_hosts=True, fetch_retries=1, fetch_backoff_s=0.05),
        store=StoreSettings(index_path=data_dir / "index"),
    )
    broker.create_topics({topics.listings: PARTITIONS, topics.dlq: 1, topics.retry: 1})
    return settings


async def wait_until(
    check: Callable[[], Awaitable[bool]], timeout_s: float = 60.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def group_committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """partition -> the group's committed offset (negative when nothing was committed)."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
    )
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        return {tp.partition: tp.offset for tp in consumer.committed(tps, timeout=5)}
    finally:
        consumer.close()


def group_caught_up(
    bootstrap: str, group: str, topic: str, partitions: int, end_offsets: dict[int, int]
) -> bool:
    """The group committed every partition up to the end offsets the publisher was acknowledged
    (Tansu under-reports high watermarks of batched writes): every event was handled and acked."""
    committed = group_committed(bootstrap, group, topic, partitions)
    return all(committed[p] >= end_offsets.get(p, 0) for p in committed)


def read_topic(bootstrap: str, topic: str, n: int, timeout_s: float = 20.0) -> list[Any]:
    """The first n messages of a one-partition topic, read from the beginning without a group."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        got: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while len(got) < n and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                got.append(msg)
        return got
    finally:
        consumer.close()


class Harness:
    """A running worker with its store, metrics, publisher and a way to query by photo."""

    def __init__(
        self, settings: WorkerSettings, resources: WorkerResources, broker: DevBroker
    ) -> None:
        self.settings = settings
        self.resources = resources
        self.store: VectorStore = resources.store
        self.metrics: WorkerMetrics = resources.metrics
        self.broker = broker
        self.publisher = ListingPublisher(broker.bootstrap, settings.broker.topic)
        self.published = 0

    def publish(self, *events: object) -> None:
        for event in events:
            self.publisher.publish(event)  # type: ignore[arg-type]
            self.published += 1
        self.publisher.flush()

    def publish_raw(self, key: bytes | None, value: bytes) -> None:
        self.publisher.publish_raw(key, value)
        self.published += 1
        self.publisher.flush()

    def handled(self) -> int:
        return int(sum(self.metrics.events_total(o) for o in OUTCOMES))

    async def drained(self, timeout_s: float = 60.0) -> None:
        """Every published event reached an outcome (written, skipped or dead-lettered)."""

        async def done() -> bool:
            return self.handled() >= self.published

        await wait_until(done, timeout_s, f"{self.published} events handled")

    async def top(self, photo: bytes) -> tuple[str, float] | None:
        image = Image.open(io.BytesIO(photo)).convert("RGB")
        vector = (await self.resources.embedder.embed([image]))[0].tolist()
        hits = await self.store.search([vector], k=1)
        return (hits[0].listing_id, hits[0].score) if hits else None


@asynccontextmanager
async def running_harness(
    settings: WorkerSettings,
    embedder: Embedder,
    broker: DevBroker,
    wrap_store: Callable[[VectorStore], VectorStore] | None = None,
) -> AsyncIterator[Harness]:
    """An in-process worker on `settings` around a loaded model; `wrap_store` may put a fault
    injector between the indexer and the real store."""
    resources = await WorkerResources.around(settings, AsyncEmbedder(embedder), owned=False)
    real = resources.store
    if wrap_store is not None:
        resources.store = wrap_store(real)
    try:
        async with running_worker(settings, resources):
            harness = Harness(settings, resources, broker)
            harness.store = real
            try:
                yield harness
            finally:
                harness.publisher.close()
    finally:
        resources.store = real
        await resources.close()


def worker_env(settings: WorkerSettings) -> dict[str, str]:
    s, b = settings.stream, settings.broker
    return {
        **os.environ,
        "LOOKALIKE_GROUP_ID": s.group_id,
        "LOOKALIKE_DATA_DIR": s.data_dir,
        "LOOKALIKE_MAX_IN_FLIGHT": str(s.max_in_flight),
        "LOOKALIKE_COMMIT_INTERVAL_S": "0.5",
        "LOOKALIKE_BROKER": b.broker,
        "LOOKALIKE_TOPIC": b.topic,
        "LOOKALIKE_DLQ_TOPIC": b.dlq_topic,
        "LOOKALIKE_RETRY_TOPIC": b.retry_topic,
        "LOOKALIKE_TOPIC_PARTITIONS": str(b.topic_partitions),
        "LOOKALIKE_INDEX_PATH": str(settings.store.index_path),
        "LOOKALIKE_DEVICE": "cpu",
        "LOOKALIKE_EMBED_BATCH_SIZE": "4",
        "LOOKALIKE_ALLOW_PRIVATE_IMAGE_HOSTS": "true",
        "LOOKALIKE_FETCH_RETRIES": "1",
        "LOOKALIKE_LOG_LEVEL": "DEBUG",
        "LOOKALIKE_LIBRARY_LOG_LEVEL": "INFO",
    }


def start_worker(settings: WorkerSettings, log: IO[bytes]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "stream"],
        cwd=REPO,
        env=worker_env(settings),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
