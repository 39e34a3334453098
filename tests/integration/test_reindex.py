"""`lookalike reindex`: a new model's collection built from the aliased one, then the alias swap."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from lookalike.reindex import ReindexError, reindex
from models.embedder import Embedder
from models.network import EmbeddingNet, export_checkpoint, load_model
from models.settings import FetchSettings, ImageSettings, ModelSettings, StoreSettings
from models.store.factory import collection_name_for, open_store, resolve_alias
from models.store.types import ListingPoint
from tests.imageserver import ImageServer
from tests.photos import photo, photo_bytes, rephotographed

pytestmark = pytest.mark.slow

PHOTOS = ["chelsea", "coffee", "astronaut", "rocket", "china"]


def _decoded(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def _projected_checkpoint(path: Path) -> str:
    """A fine-tuned-looking model: the ImageNet backbone plus a 128-d projection."""
    base = load_model("efficientnet-lite0")
    torch.manual_seed(0)
    net = EmbeddingNet("efficientnet-lite0", base.backbone, "efficientnet-lite0-tmp", 128)
    return export_checkpoint(net, path)


def _payload(listing_id: str, urls: list[str], model_id: str) -> dict[str, Any]:
    return {
        "listing_id": listing_id,
        "title": f"listing {listing_id}",
        "category": "art/prints",
        "category_path": ["art", "art/prints"],
        "price": 10.0,
        "price_amount": "10.00",
        "currency": "USD",
        "shop_id": "S1",
        "state": "active",
        "image_urls": urls,
        "image_hashes": ["x"] * len(urls),
        "source_image_urls": urls,
        "version": 3,
        "model_id": model_id,
    }


async def test_reindex_builds_the_new_collection_and_moves_the_alias(
    image_server: ImageServer, tmp_path: Path
) -> None:
    store_settings = StoreSettings(index_path=tmp_path / "index")
    old = Embedder.from_settings(ModelSettings(device="cpu", embed_batch_size=4))
    store = open_store(store_settings, old.model_id, old.dim)
    await store.ensure_collection()
    for name in PHOTOS:
        url = image_server.add(f"/{name}.jpg", photo_bytes(name))
        vectors = old.embed([photo(name)]).tolist()
        await store.upsert_listing(
            ListingPoint(f"L-{name}", vectors, _payload(f"L-{name}", [url], old.model_id))
        )
    # A listing whose photo is gone from its host cannot be embedded again.
    gone = image_server.url("/gone.jpg")
    vectors = old.embed([photo("flower")]).tolist()
    await store.upsert_listing(ListingPoint("L-gone", vectors, _payload("L-gone", [gone], "x")))
    # Deleted and sold-out listings: their versions must stop older events after the rollout too.
    await store.tombstone("L-deleted", 7, "deleted")
    await store.tombstone("L-coffee-old", 4, "sold_out")
    await store.close()

    checkpoint = tmp_path / "projected.pt"
    new_id = _projected_checkpoint(checkpoint)
    model = ModelSettings(device="cpu", embed_batch_size=4, model_checkpoint=checkpoint)
    fetch = FetchSettings(allow_private_image_hosts=True, fetch_retries=0)
    result = await reindex(store_settings, model, fetch, ImageSettings(), progress=False)

    new_name = collection_name_for("listings", new_id)
    assert (result.source, result.target) == (store.collection_name, new_name)
    assert (result.listings, result.images, result.failed) == (5, 5, ["L-gone"])
    assert result.tombstones == 2
    assert result.swapped
    assert await resolve_alias(store_settings) == new_name

    new = Embedder.from_settings(model)
    reindexed = open_store(store_settings, new_id, new.dim)
    await reindexed.ensure_collection()
    try:
        assert await reindexed.vector_size() == 128
        assert await reindexed.count() == 5
        stored = await reindexed.get("L-coffee")
        assert stored is not None
        assert stored.payload["model_id"] == new_id
        assert stored.payload["title"] == "listing L-coffee"
        assert stored.payload["version"] == 3
        tombstones = {s.listing_id: s async for s in reindexed.scroll(include_tombstones=True)}
        tombstones = {k: v for k, v in tombstones.items() if v.tombstone}
        assert {k: (v.version, v.payload["state"]) for k, v in tombstones.items()} == {
            "L-deleted": (7, "deleted"),
            "L-coffee-old": (4, "sold_out"),
        }
        # An event older than the deletion, replayed against the new collection, stays out.
        late = _payload("L-deleted", ["http://img.test/x.jpg"], new_id) | {"version": 6}
        await reindexed.upsert_listing(ListingPoint("L-deleted", [[1.0] * 128], late))
        deleted = await reindexed.get("L-deleted")
        assert deleted is not None
        assert deleted.tombstone
        assert await reindexed.count() == 5
        for name in PHOTOS:
            query = new.embed([_decoded(rephotographed(name))]).tolist()
            hits = await reindexed.search(query, 3)
            assert hits[0].listing_id == f"L-{name}"
    finally:
        await reindexed.close()

    # The old collection is left as it was (a rollback is an alias swap back).
    old_store = open_store(store_settings, old.model_id, old.dim)
    await old_store.ensure_collection()
    try:
        assert await old_store.count() == 6
    finally:
        await old_store.close()

    with pytest.raises(ReindexError, match="nothing to do"):
        await reindex(store_settings, model, fetch, ImageSettings(), progress=False)
