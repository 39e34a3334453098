"""`lookalike reindex`: a new model's collection built from the aliased one, then the alias swap."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from lookalike.cli import main
from lookalike.reindex import FailureBudget, ReindexError, reindex
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
    # One listing of six fails: over the default 1% budget, within 20%.
    budget = FailureBudget.parse("20%")
    result = await reindex(
        store_settings, model, fetch, ImageSettings(), progress=False, max_failed=budget
    )

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


def _exit_code(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    code = exited.value.code
    return code if isinstance(code, int) else 1


async def _catalog_on_loopback(settings: StoreSettings, model_id: str) -> str:
    """Three listings of the ImageNet model whose photos are on loopback (refused by default)."""
    store = open_store(settings, model_id, 1280)
    await store.ensure_collection()
    try:
        for i in range(3):
            urls = [f"http://127.0.0.1:9/L{i}.jpg"]
            vector = [[1.0 if j == i else 0.0 for j in range(1280)]]
            await store.upsert_listing(ListingPoint(f"L{i}", vector, _payload(f"L{i}", urls, "x")))
    finally:
        await store.close()
    return store.collection_name


def test_reindex_with_every_photo_failing_leaves_the_alias_and_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = StoreSettings(index_path=tmp_path / "index")
    old_id = Embedder.from_settings(ModelSettings(device="cpu")).model_id
    old_name = asyncio.run(_catalog_on_loopback(settings, old_id))
    monkeypatch.setenv("LOOKALIKE_INDEX_PATH", str(settings.index_path))
    monkeypatch.setenv("LOOKALIKE_DEVICE", "cpu")
    monkeypatch.delenv("LOOKALIKE_ALLOW_PRIVATE_IMAGE_HOSTS", raising=False)

    # The model the alias already serves: a no-op, exit 0, one line.
    assert _exit_code(["reindex"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("reindex: nothing to do") and "\n" not in out, out

    checkpoint = tmp_path / "projected.pt"
    new_id = _projected_checkpoint(checkpoint)
    monkeypatch.setenv("LOOKALIKE_MODEL_CHECKPOINT", str(checkpoint))
    assert _exit_code(["reindex", "--max-failed", "2"]) == 1
    err = capsys.readouterr().err
    assert "3 of 3 listings failed" in err and "host_not_allowed 3" in err, err
    assert "LOOKALIKE_ALLOW_PRIVATE_IMAGE_HOSTS=true" in err
    assert asyncio.run(resolve_alias(settings)) == old_name

    # alias show lists both collections, set moves the alias forward and back.
    new_name = collection_name_for("listings", new_id)
    assert _exit_code(["alias", "show"]) == 0
    table = capsys.readouterr().out
    assert f"alias listings -> {old_name}" in table
    rows = {line.split()[-4]: line.split()[-2:] for line in table.splitlines()[2:]}
    assert rows == {old_name: ["3", "1280"], new_name: ["0", "128"]}, table
    assert _exit_code(["alias", "set", new_id]) == 0
    assert asyncio.run(resolve_alias(settings)) == new_name
    assert _exit_code(["alias", "set", new_name]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert _exit_code(["alias", "set", "listings__nope"]) == 1
    assert old_name in capsys.readouterr().err
    assert _exit_code(["alias", "set", old_name]) == 0
    assert asyncio.run(resolve_alias(settings)) == old_name
