"""The production shape: the indexer (`lookalike worker`) and the query service (`lookalike api`)
as separate processes, configured only through LOOKALIKE_* variables, over a shared broker.

compose.yaml shares the store through a Qdrant server. No Qdrant server runs here, and neither
local store can be opened by two processes at once (Qdrant Edge locks its shard; qdrant-client's
on-disk local mode takes a file lock and reads everything into memory when it opens). So the
two processes share the on-disk Edge index one after the other: the worker indexes and deletes,
stops cleanly, then the API serves what it wrote. The test also shows the lock doing its job: an
API started while the worker holds the index refuses to start, and says why."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest

from lookalike.stats import consumer_lag
from models.events import ImageRef, ListingDeleted, ListingUpserted, Price
from stream.broker import DevBroker
from stream.publisher import ListingPublisher
from tests.imageserver import ImageServer
from tests.photos import photo_bytes, rephotographed
from tests.stream_support import fresh_topics

pytestmark = pytest.mark.slow

PHOTOS = ["chelsea", "coffee", "astronaut", "rocket", "motorcycle", "china"]
DELETED = "P-coffee"
STOP_S = 10.0


def _listing(name: str, url: str) -> ListingUpserted:
    return ListingUpserted(
        listing_id=f"P-{name}",
        version=1,
        occurred_at=datetime.now(UTC),
        state="active",
        title=f"a {name}",
        category="art/prints",
        price=Price(amount=Decimal("12.50"), currency="EUR"),
        shop_id="S1",
        images=[ImageRef(url=url)],
    )


def _publish(publisher: ListingPublisher, events: list[ListingUpserted | ListingDeleted]) -> None:
    publisher.publish_many(events)
    publisher.flush()


async def _spawn(args: list[str], env: Mapping[str, str], log: Path) -> asyncio.subprocess.Process:
    with log.open("wb") as stderr:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "lookalike",
            *args,
            env={**os.environ, **env},
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
        )


async def _stop(process: asyncio.subprocess.Process, log: Path) -> None:
    process.send_signal(signal.SIGTERM)
    code = await asyncio.wait_for(process.wait(), STOP_S)
    assert code == 0, await asyncio.to_thread(_tail, log)


async def _caught_up(
    bootstrap: str, group: str, publisher: ListingPublisher, log: Path, timeout_s: float
) -> None:
    """The worker's group committed every event published (it acks only after the store did).
    The ends come from the publisher's delivery reports: Tansu reports a partition's high
    watermark as the first offset of its last batch plus one, short of a multi-record batch."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    committed: dict[int, int | None] = {}
    while asyncio.get_running_loop().time() < deadline:
        lags = await asyncio.to_thread(consumer_lag, bootstrap, group, publisher.topic)
        committed = {p.partition: p.committed for p in lags}
        if all((committed.get(p) or 0) >= end for p, end in publisher.end_offsets.items()):
            return
        await asyncio.sleep(0.5)
    tail = await asyncio.to_thread(_tail, log)
    raise AssertionError(f"worker behind: {committed} < {publisher.end_offsets}\n{tail}")


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


async def _api_url(process: asyncio.subprocess.Process, log: Path) -> str:
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), 60)
    except TimeoutError:
        raise AssertionError(await asyncio.to_thread(_tail, log)) from None
    text = line.decode().strip()
    assert text.startswith("api: http://"), (text, await asyncio.to_thread(_tail, log))
    return text.removeprefix("api: ")


async def _search(session: aiohttp.ClientSession, base: str, photo: bytes) -> list[str]:
    form = aiohttp.FormData()
    form.add_field("image", photo, filename="photo.jpg", content_type="image/jpeg")
    async with session.post(f"{base}v1/search?k=10", data=form) as response:
        assert response.status == 200, await response.text()
        body = await response.json()
    return [hit["id"] for hit in body["listings"]]


async def test_worker_and_api_as_separate_processes(
    broker: DevBroker, image_server: ImageServer, tmp_path: Path
) -> None:
    topics = fresh_topics()
    env = {
        "LOOKALIKE_BROKER": broker.bootstrap,
        "LOOKALIKE_TOPIC": topics.listings,
        "LOOKALIKE_DLQ_TOPIC": topics.dlq,
        "LOOKALIKE_GROUP_ID": topics.group_id,
        "LOOKALIKE_TOPIC_PARTITIONS": "2",
        "LOOKALIKE_INDEX_PATH": str(tmp_path / "index"),
        "LOOKALIKE_DATA_DIR": str(tmp_path / "worker"),
        "LOOKALIKE_DEVICE": "cpu",
        "LOOKALIKE_EMBED_BATCH_SIZE": "4",
    }
    events: list[ListingUpserted | ListingDeleted] = [
        _listing(name, image_server.add(f"/{name}.jpg", photo_bytes(name))) for name in PHOTOS
    ]
    broker.create_topics({topics.listings: 2})
    publisher = ListingPublisher(broker.bootstrap, topics.listings)
    await asyncio.to_thread(_publish, publisher, events)

    worker_log = tmp_path / "worker.log"
    # Only the worker fetches listing photos, and this test's image server is on loopback.
    worker = await _spawn(
        ["worker"], {**env, "LOOKALIKE_ALLOW_PRIVATE_IMAGE_HOSTS": "true"}, worker_log
    )
    try:
        await _caught_up(broker.bootstrap, topics.group_id, publisher, worker_log, 90)
        deletion = ListingDeleted(listing_id=DELETED, version=2, occurred_at=datetime.now(UTC))
        await asyncio.to_thread(_publish, publisher, [deletion])
        await _caught_up(broker.bootstrap, topics.group_id, publisher, worker_log, 30)

        # While the worker holds the Edge index, a second process cannot open it.
        locked_log = tmp_path / "api-locked.log"
        locked = await _spawn(["api", "--port", "0"], env, locked_log)
        code = await asyncio.wait_for(locked.wait(), 60)
        assert code != 0
        assert "another store or process" in await asyncio.to_thread(_tail, locked_log)
    finally:
        await asyncio.to_thread(publisher.close)
        if worker.returncode is None:
            await _stop(worker, worker_log)

    # The operator's view of what the worker left behind.
    stats_log = tmp_path / "stats.log"
    stats = await _spawn(["stats", "--json"], env, stats_log)
    out, _ = await asyncio.wait_for(stats.communicate(), 60)
    assert stats.returncode == 0, await asyncio.to_thread(_tail, stats_log)
    report = json.loads(out)
    index = report["index"]
    assert index["listings"] == index["active_listings"] == len(PHOTOS) - 1
    assert index["alias_target"] == index["collection"]
    assert index["collection"] == f"listings__{index['model_id']}"
    assert report["consumer"]["group"] == topics.group_id
    assert report["consumer"]["lag"] == 0
    committed = {p["partition"]: p["committed"] for p in report["consumer"]["partitions"]}
    assert committed == publisher.end_offsets

    api_log = tmp_path / "api.log"
    api = await _spawn(["api", "--host", "127.0.0.1", "--port", "0"], env, api_log)
    try:
        base = await _api_url(api, api_log)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}readyz") as response:
                assert response.status == 200, await response.text()
            for name in PHOTOS:
                if f"P-{name}" == DELETED:
                    continue
                found = await _search(session, base, rephotographed(name))
                assert found[0] == f"P-{name}", (name, found)
                assert DELETED not in found
            assert DELETED not in await _search(session, base, photo_bytes("coffee"))
            async with session.get(f"{base}v1/listings/{DELETED}") as response:
                assert response.status == 404
            async with session.get(f"{base}v1/listings/P-chelsea") as response:
                shown = await response.json()
                assert shown["price"] == {"amount": "12.50", "currency": "EUR"}
    finally:
        if api.returncode is None:
            await _stop(api, api_log)
