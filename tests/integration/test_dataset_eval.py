"""Scoring a dataset split: relevance by group, per-category and per-task tables, and the store's
ranking equal to the in-memory MaxSim that training validates with."""

from __future__ import annotations

import numpy as np
import pytest

from lookalike.evaluation import DataEvaluation, data_json, format_data_report
from models.dataset.dataset import DataListing
from models.evaluation.listings import (
    build_report,
    evaluate_listings,
    queries,
    rank_in_memory,
)


def _listing(i: int, group: str, top: str, buyers: int = 1) -> DataListing:
    return DataListing(
        lineno=i + 1,
        listing_id=f"L{i}",
        group=group,
        split="test",
        photos=(f"L{i}-0", f"L{i}-1"),
        buyer_photos=tuple(f"L{i}-b{k}" for k in range(buyers)),
        labels={"category": f"{top}/x", "top_level": top, "colour": "red" if i % 2 else "blue"},
    )


LISTINGS = [
    _listing(i, f"g:G{i // 2}" if i < 16 else f"l:L{i}", "common" if i < 18 else "rare")
    for i in range(20)
]


def _vectors(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for x in LISTINGS:
        for key in (*x.photos, *x.buyer_photos):
            v = rng.normal(size=16).astype(np.float32)
            out[key] = v / np.linalg.norm(v)
        # A buyer photo near its listing's first photo, so the scores are not all chance.
        mixed = out[x.photos[0]] + 1.5 * out[x.buyer_photos[0]]
        out[x.buyer_photos[0]] = (mixed / np.linalg.norm(mixed)).astype(np.float32)
    return out


def test_relevance_is_by_group_and_a_listing_alone_is_no_query() -> None:
    qs = queries(LISTINGS)
    buyer = [q for q in qs if q.kind == "buyer"]
    listing = [q for q in qs if q.kind == "listing"]
    assert len(buyer) == 20
    assert buyer[0].relevant == {"L0", "L1"} and buyer[19].relevant == {"L19"}
    # Listings 16-19 have no group: they are buyer-photo queries only.
    assert [q.query for q in listing] == [f"L{i}" for i in range(16)]
    assert listing[0].relevant == {"L1"}


async def test_the_store_ranks_like_the_in_memory_maxsim() -> None:
    vectors = _vectors()
    tasks = ["category", "top_level", "colour"]
    through_store = await evaluate_listings("random-16", "test", LISTINGS, vectors, tasks)
    in_memory = build_report(
        "random-16", "test", LISTINGS, rank_in_memory(LISTINGS, vectors), tasks
    )
    for kind in ("buyer", "listing"):
        got, want = through_store.scores(kind), in_memory.scores(kind)
        assert got.queries == want.queries
        assert got.recall == pytest.approx(want.recall)
        assert got.mean_average_precision == pytest.approx(want.mean_average_precision)
        mine, theirs = through_store.per_category(kind), in_memory.per_category(kind)
        assert list(mine) == list(theirs)
        for category, (n, recall) in mine.items():
            assert n == theirs[category][0]
            assert recall == pytest.approx(theirs[category][1])
        assert through_store.agreement(kind) == pytest.approx(in_memory.agreement(kind))
    assert 0 < through_store.scores("buyer").recall[1] < 1
    table = through_store.per_category("buyer")
    assert list(table) == ["common", "rare"]
    assert table["common"][0] == 18 and table["rare"][0] == 2
    assert through_store.agreement("buyer")["top_level"] > 0.5
    report = through_store.as_json()
    assert report["groups"] == 12 and report["listings"] == 20
    # The ungrouped rare listings ask no listing query: the rare row is absent there.
    assert set(report["per_category"]["listing"]) == {"common"}
    assert report["per_category"]["listing"]["common"]["queries"] == 16


async def test_the_text_and_json_of_a_comparison() -> None:
    tasks = ["category", "top_level", "colour"]
    first = await evaluate_listings("model-a", "test", LISTINGS, _vectors(0), tasks)
    second = build_report("model-b", "test", LISTINGS, rank_in_memory(LISTINGS, _vectors(1)), tasks)
    both = DataEvaluation(first, second)
    text = format_data_report(both)
    assert "compare model-b  (delta: model - compare)" in text
    assert "recall@10 per top-level category, buyer photo -> listing" in text
    rare = next(line for line in text.splitlines() if line.strip().startswith("rare"))
    mine, theirs = first.per_category("buyer")["rare"][1], second.per_category("buyer")["rare"][1]
    assert rare.split()[1:] == ["2", f"{mine:.3f}", f"{theirs:.3f}", f"{mine - theirs:+.3f}"]
    out = data_json(both)
    assert out["compare"]["model_id"] == "model-b"
    assert out["delta"]["listing_to_listing"]["recall@10"] == pytest.approx(
        first.scores("listing").recall[10] - second.scores("listing").recall[10]
    )
    assert set(out["delta"]["per_category"]["buyer"]) == {"common", "rare"}
