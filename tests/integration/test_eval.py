"""`lookalike eval`: the harness ranks through the real store exactly as in memory, and the
command prints the documented JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lookalike.cli import main
from models.evalset.catalog import build_eval_catalog
from models.evaluation.harness import (
    evaluate_in_store,
    rank_in_memory,
    report,
    split_photo_keys,
)
from models.network import load_model

pytestmark = pytest.mark.slow


async def test_the_store_ranks_like_the_in_memory_maxsim() -> None:
    catalog = build_eval_catalog(40, seed=3)
    items = catalog.split("test")
    rng = np.random.default_rng(0)
    vectors = {}
    for key in split_photo_keys(items):
        v = rng.normal(size=32).astype(np.float32)
        vectors[key] = v / np.linalg.norm(v)
    # A buyer photo close to its item's first product shot, so the metrics are not all zero.
    for item in items:
        anchor = vectors[item.listings[0].photos[0]]
        for key in item.buyer_photos[:1]:
            mixed = anchor + 0.5 * vectors[key]
            vectors[key] = (mixed / np.linalg.norm(mixed)).astype(np.float32)

    through_store = await evaluate_in_store(catalog, "test", "random-32", vectors)
    in_memory = report("random-32", "test", items, rank_in_memory(items, vectors))

    assert through_store.listings == 2 * len(items)
    for got, want in (
        (through_store.buyer_to_listing, in_memory.buyer_to_listing),
        (through_store.listing_to_listing, in_memory.listing_to_listing),
    ):
        assert got.queries == want.queries
        assert got.recall == pytest.approx(want.recall)
        assert got.mean_average_precision == pytest.approx(want.mean_average_precision)
    assert through_store.attribute_agreement == pytest.approx(in_memory.attribute_agreement)
    assert 0 < through_store.buyer_to_listing.recall[10] < 1


def test_eval_prints_one_json_object_with_the_documented_keys(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["eval", "--items", "24", "--workers", "2", "--json"])
    assert exit_.value.code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model_id"] == load_model().model_id
    assert out["split"] == "test"
    for key in ("buyer_to_listing", "listing_to_listing"):
        scores = out[key]
        assert {"recall@1", "recall@5", "recall@10", "map"} <= set(scores)
        assert 0 <= scores["recall@1"] <= scores["recall@5"] <= scores["recall@10"] <= 1
        assert 0 < scores["map"] <= 1
    # ImageNet features find a listing's twin (the same item, other shots) almost always.
    assert out["listing_to_listing"]["recall@10"] >= 0.9


def test_eval_of_a_file_that_is_no_checkpoint_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bogus = tmp_path / "model.pt"
    bogus.write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit) as exit_:
        main(["eval", "--items", "12", "--model", str(bogus)])
    assert exit_.value.code == 1
    assert "not a torch checkpoint" in capsys.readouterr().err
