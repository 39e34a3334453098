"""Another backbone end to end: a short `train --data`-style run on Lite1 exports a checkpoint
the embedder loads (240 px input, its own model id) and `reindex` rolls it out."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from lookalike.reindex import reindex
from models.dataset.dataset import DatasetOptions, load_dataset
from models.dataset.demo import write_demo_dataset
from models.embedder import Embedder
from models.evalset.catalog import build_eval_catalog
from models.network import variant
from models.settings import FetchSettings, ImageSettings, ModelSettings, StoreSettings
from models.store.factory import collection_name_for, open_store, resolve_alias
from models.store.types import ListingPoint
from models.training.source import DatasetSource
from models.training.trainer import TrainConfig, Trainer
from tests.imageserver import ImageServer
from tests.photos import photo, photo_bytes

pytestmark = pytest.mark.slow

NAME = "efficientnet-lite1"


def _train(root: Path) -> Path:
    catalog = build_eval_catalog(6, seed=5, val_share=0.34, test_share=0.0)
    manifest = write_demo_dataset(catalog, root / "data", workers=1)
    options = DatasetOptions(manifest=manifest)
    dataset = load_dataset(options, FetchSettings(), ImageSettings(), variant(NAME).preprocessing())
    config = TrainConfig(
        out_dir=root / "run",
        model_name=NAME,
        device="cpu",
        epochs=1,
        batch_size=16,
        projection_dim=32,
        # Lite1 has 21 blocks: only the last one and the head convolution train.
        train_from_block=20,
        workers=2,
    )
    result = Trainer(config, DatasetSource(dataset), progress=False).run()
    return result.checkpoint


async def test_a_lite1_checkpoint_serves_and_rolls_out(
    tmp_path: Path, image_server: ImageServer
) -> None:
    checkpoint = await asyncio.to_thread(_train, tmp_path)
    # The checkpoint alone: it names its backbone and the input it was trained on (240 px).
    model = ModelSettings(model_checkpoint=checkpoint, device="cpu")
    embedder = await asyncio.to_thread(Embedder.from_settings, model)
    assert embedder.model_id.startswith(f"{NAME}-ft-") and embedder.dim == 32
    assert embedder.preprocessing == variant(NAME).preprocessing()

    # An index built by the ImageNet Lite0 model, rolled out to the Lite1 checkpoint.
    settings = StoreSettings(index_path=tmp_path / "index")
    old = await asyncio.to_thread(Embedder.from_settings, ModelSettings(device="cpu"))
    store = open_store(settings, old.model_id, old.dim)
    await store.ensure_collection()
    for name in ("chelsea", "coffee", "rocket"):
        url = image_server.add(f"/{name}.jpg", photo_bytes(name))
        payload = {
            "listing_id": f"L-{name}",
            "category": "art/prints",
            "category_path": ["art", "art/prints"],
            "state": "active",
            "image_urls": [url],
            "source_image_urls": [url],
            "image_hashes": ["x"],
            "version": 1,
            "model_id": old.model_id,
        }
        vectors = old.embed([photo(name)]).tolist()
        await store.upsert_listing(ListingPoint(f"L-{name}", vectors, payload))
    await store.close()

    fetch = FetchSettings(allow_private_image_hosts=True, fetch_retries=0)
    result = await reindex(settings, model, fetch, ImageSettings(), progress=False)
    target = collection_name_for("listings", embedder.model_id)
    assert result.swapped and result.listings == 3 and result.failed == []
    assert await resolve_alias(settings) == target
    rolled = open_store(settings, embedder.model_id, embedder.dim)
    await rolled.ensure_collection()
    try:
        assert await rolled.vector_size() == 32
        assert await rolled.count() == 3
    finally:
        await rolled.close()
