"""`lookalike train`: a short CPU run improves validation retrieval, exports a servable checkpoint
and resumes where it stopped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.embedder import Embedder
from models.evalset.catalog import build_eval_catalog
from models.evaluation.harness import rank_in_memory, report, split_photo_keys
from models.evaluation.photos import embed_images, load_photos
from models.network import load_model
from models.settings import ModelSettings
from models.training.trainer import LOG_FILE, TrainConfig, Trainer

pytestmark = pytest.mark.slow

# Small enough for CI's CPU; a validation split big enough that ranking is not trivial.
CATALOG = build_eval_catalog(36, seed=5, val_share=0.4, test_share=0.1)
# Resuming is about bookkeeping, not quality: the smallest catalog with every split will do.
TINY = build_eval_catalog(12, seed=5, val_share=0.25, test_share=0.1)


def _config(out: Path, **changes: object) -> TrainConfig:
    base = TrainConfig(
        out_dir=out,
        device="cpu",
        epochs=3,
        batch_size=16,
        projection_dim=64,
        train_from_block=13,
        catalog_items=36,
        catalog_seed=5,
        workers=2,
    )
    return base.model_copy(update=changes)


def test_a_short_run_improves_retrieval_and_exports_the_best_epoch(tmp_path: Path) -> None:
    result = Trainer(_config(tmp_path), CATALOG, progress=False).run()

    assert [e["epoch"] for e in result.history] == [0, 1, 2, 3]
    before = result.history[0]["val"]["buyer_to_listing"]
    best = result.history[result.best_epoch]["val"]["buyer_to_listing"]
    assert best["map"] > before["map"] + 0.05
    assert best["recall@1"] > before["recall@1"]
    for event in result.history[1:]:
        assert event["images_per_s"] > 0 and event["seconds"] > 0
        assert set(event["loss"]) >= {"category", "colour", "shape", "material", "item"}
    logged = [json.loads(line) for line in (tmp_path / LOG_FILE).read_text().splitlines()]
    assert [e["epoch"] for e in logged] == [0, 1, 2, 3]

    # The export is what the embedder loads by configuration, under its own model id...
    net = load_model(checkpoint=result.checkpoint)
    assert net.model_id == result.model_id != load_model().model_id
    assert result.model_id.startswith("efficientnet-lite0-ft-")
    embedder = Embedder.from_settings(
        ModelSettings(model_checkpoint=result.checkpoint, device="cpu")
    )
    assert embedder.model_id == result.model_id and embedder.dim == 64
    # ...and it is the best epoch's weights: served end to end (full float32 forward, no cached
    # trunk), it scores on the validation split what training recorded for that epoch.
    items = CATALOG.split("val")
    keys = split_photo_keys(items)
    images = load_photos(CATALOG, keys, embedder.preprocessing, workers=2)
    vectors = dict(zip(keys, embed_images(embedder, images), strict=True))
    served = report(result.model_id, "val", items, rank_in_memory(items, vectors))
    assert served.buyer_to_listing.mean_average_precision == pytest.approx(best["map"], abs=0.03)


def test_resume_continues_from_the_saved_epoch_and_refuses_other_settings(
    tmp_path: Path,
) -> None:
    Trainer(_config(tmp_path, epochs=1), TINY, progress=False).run()

    resumed = Trainer(_config(tmp_path, epochs=2), TINY, progress=False)
    result = resumed.run(resume=True)
    # Epochs 0 and 1 come from the first run's state; only epoch 2 was trained now.
    assert [e["epoch"] for e in result.history] == [0, 1, 2]
    logged = [json.loads(line) for line in (tmp_path / LOG_FILE).read_text().splitlines()]
    assert [e["epoch"] for e in logged] == [0, 1, 2]
    assert logged[1] == json.loads(json.dumps(result.history[1]))

    other = Trainer(_config(tmp_path, epochs=3, lr=0.5), TINY, progress=False)
    with pytest.raises(ValueError, match="lr"):
        other.run(resume=True)
