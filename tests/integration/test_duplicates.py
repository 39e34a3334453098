"""One result per product across shops: five shops' uploads of one photo and a different listing,
indexed by the real worker (which groups them as it writes), searched through the real API."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from PIL import Image

from models.duplicates import GROUP_FIELD
from models.embedder import Embedder
from models.settings import ModelSettings
from stream.broker import DevBroker
from tests.imageserver import ImageServer
from tests.query_support import api_settings, app_client, image_upload, listing_ids
from tests.stream_support import (
    Harness,
    deletion,
    fresh_topics,
    generated_photo,
    listing,
    running_harness,
    worker_settings,
)

pytestmark = pytest.mark.slow

SHOPS = ("S1", "S2", "S3", "S4", "S5")


@pytest.fixture(scope="module")
def embedder() -> Iterator[Embedder]:
    yield Embedder.from_settings(ModelSettings(device="cpu", embed_batch_size=4))


def _uploaded_by(photo: bytes, quality: int, side: int) -> bytes:
    """The same photo as another shop uploads it: resized and re-encoded."""
    image = Image.open(io.BytesIO(photo)).convert("RGB").resize((side, side * 3 // 4))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue()


@pytest.fixture
async def harness(
    broker: DevBroker, embedder: Embedder, image_server: ImageServer, tmp_path: Path
) -> AsyncIterator[Harness]:
    settings = worker_settings(broker, fresh_topics(), tmp_path)
    async with running_harness(settings, embedder, broker) as running:
        yield running


async def _search(client: TestClient[Any, Any], photo: bytes, query: str = "") -> Any:
    response = await client.post(f"/v1/search?k=10{query}", data=image_upload(photo))
    assert response.status == 200, await response.text()
    return await response.json()


async def test_five_shops_one_photo_are_one_result_until_collapse_none(
    harness: Harness, image_server: ImageServer, tmp_path: Path
) -> None:
    photo = generated_photo(7)
    copies = [
        image_server.add(f"{shop}.jpg", _uploaded_by(photo, quality, side))
        for shop, quality, side in zip(
            SHOPS, (92, 85, 75, 70, 95), (320, 300, 280, 360, 240), strict=True
        )
    ]
    other = image_server.add("other.jpg", generated_photo(8))
    events = [
        listing(f"copy-{shop}", 1, [url]).model_copy(update={"shop_id": shop})
        for shop, url in zip(SHOPS, copies, strict=True)
    ]
    harness.publish(*events, listing("other", 1, [other]).model_copy(update={"shop_id": "S9"}))
    await harness.drained()

    groups = {
        e.listing_id: (await harness.store.get(e.listing_id)).payload[GROUP_FIELD]  # type: ignore[union-attr]
        for e in events
    }
    assert len(set(groups.values())) == 1, groups
    stored_other = await harness.store.get("other")
    assert stored_other is not None
    assert stored_other.payload[GROUP_FIELD] not in groups.values()

    async with app_client(api_settings(tmp_path), store=harness.store) as client:
        body = await _search(client, photo)
        ids = listing_ids(body)
        copies_found = [i for i in ids if i.startswith("copy-")]
        assert len(copies_found) == 1 and "other" in ids, ids
        best = body["listings"][0]
        assert best["id"] == copies_found[0] and best["duplicates"] == 4, best
        assert next(h for h in body["listings"] if h["id"] == "other")["duplicates"] == 0

        everything = await _search(client, photo, "&collapse=none")
        assert set(listing_ids(everything)) == {*groups, "other"}
        assert all(h["duplicates"] is None for h in everything["listings"])

        response = await client.get(f"/v1/listings/{best['id']}/duplicates")
        assert response.status == 200
        others = listing_ids(await response.json())
        assert sorted(others) == sorted(set(groups) - {best["id"]})

        # The best-scoring copy is deleted: another shop's copy serves the group.
        harness.publish(deletion(best["id"], 2))
        await harness.drained()
        body = await _search(client, photo)
        ids = listing_ids(body)
        copies_found = [i for i in ids if i.startswith("copy-")]
        assert len(copies_found) == 1 and copies_found[0] != best["id"], ids
        served = next(h for h in body["listings"] if h["id"] == copies_found[0])
        assert served["duplicates"] == 3, served


async def test_a_copy_that_changes_its_photo_leaves_the_group(
    harness: Harness, image_server: ImageServer, tmp_path: Path
) -> None:
    photo = generated_photo(11)
    a = image_server.add("a.jpg", photo)
    b = image_server.add("b.jpg", _uploaded_by(photo, 80, 300))
    new = image_server.add("new.jpg", generated_photo(12))
    harness.publish(listing("A", 1, [a]), listing("B", 1, [b]))
    await harness.drained()
    first = await harness.store.get("A")
    second = await harness.store.get("B")
    assert first is not None and second is not None
    assert first.payload[GROUP_FIELD] == second.payload[GROUP_FIELD]

    # A payload-only change keeps the group; new photos are grouped again.
    harness.publish(listing("B", 2, [b], amount="11.00"))
    await harness.drained()
    kept = await harness.store.get("B")
    assert kept is not None and kept.payload[GROUP_FIELD] == first.payload[GROUP_FIELD]
    harness.publish(listing("B", 3, [new]))
    await harness.drained()
    moved = await harness.store.get("B")
    assert moved is not None and moved.payload[GROUP_FIELD] != first.payload[GROUP_FIELD]

    async with app_client(api_settings(tmp_path), store=harness.store) as client:
        body = await _search(client, photo)
        by_id = {h["id"]: h for h in body["listings"]}
        assert by_id["A"]["duplicates"] == 0 and "B" in by_id, by_id
