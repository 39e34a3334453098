"""The evaluation set: deterministic items, listings and buyer photos with ground-truth labels."""

from __future__ import annotations

import io
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.evalset.catalog import (
    ATTRIBUTES,
    SPLITS,
    VOCABULARY,
    EvalCatalog,
    EvalItem,
    build_eval_catalog,
    render_photos,
)
from models.evalset.products import COLOURS
from models.evalset.render import item_template


@pytest.fixture(scope="module")
def catalog() -> EvalCatalog:
    return build_eval_catalog()


def _decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "JPEG"
    image.load()
    return image


def _mean_quantisation(image: Image.Image) -> float:
    tables = image.quantization  # type: ignore[attr-defined]
    return float(np.mean(tables[0]))


def test_same_seed_same_catalog_and_bytes(catalog: EvalCatalog) -> None:
    again = build_eval_catalog()
    assert again == catalog
    item_template.cache_clear()  # redraw from scratch: the bytes must not depend on a cache
    for key in (*catalog.items[0].photos[:2], catalog.items[5].buyer_photos[0]):
        assert again.photo_bytes(key) == catalog.photo_bytes(key)


def test_another_seed_another_catalog(catalog: EvalCatalog) -> None:
    other = build_eval_catalog(seed=12)
    assert [i.title for i in other.items] != [i.title for i in catalog.items]
    assert [i.split for i in other.items] != [i.split for i in catalog.items]
    key = catalog.items[0].buyer_photos[0]
    assert other.photo_bytes(key) != catalog.photo_bytes(key)


def test_a_bigger_catalog_extends_a_smaller_one(catalog: EvalCatalog) -> None:
    small = build_eval_catalog(40)
    for item, same in zip(small.items, catalog.items, strict=False):
        assert (item.item_id, item.title, item.labels) == (same.item_id, same.title, same.labels)


def test_process_pool_renders_the_same_bytes(catalog: EvalCatalog) -> None:
    keys = [key for item in catalog.items[:4] for key in item.photos]
    pooled = render_photos(catalog, keys, workers=2)
    assert list(pooled) == keys
    serial = render_photos(catalog, keys, workers=1)
    assert pooled == serial
    assert serial == {key: catalog.photo_bytes(key) for key in keys}
    assert len(set(serial.values())) == len(keys)


def test_splits_are_by_item_disjoint_and_sized(catalog: EvalCatalog) -> None:
    n = len(catalog.items)
    assert n == 360
    sizes = {name: len(catalog.split(name)) for name in SPLITS}
    assert sizes == {"train": 216, "val": 36, "test": 108}
    seen: set[str] = set()
    for name in SPLITS:
        ids = {item.item_id for item in catalog.split(name)}
        assert ids.isdisjoint(seen)
        seen |= ids
        # Stratified: every category is evaluated and trained on.
        assert {item.category for item in catalog.split(name)} == set(VOCABULARY["category"])
        keys = set(catalog.photo_keys(name))
        assert keys == {key for item in catalog.split(name) for key in item.photos}
    assert len(seen) == n
    assert sorted(catalog.photo_keys()) == sorted(
        key for name in SPLITS for key in catalog.photo_keys(name)
    )
    with pytest.raises(ValueError):
        catalog.split("holdout")


def test_listings_and_photo_counts() -> None:
    custom = build_eval_catalog(
        30, seed=5, listings_per_item=3, photos_per_listing=1, buyer_photos_per_item=2
    )
    for item in custom.items:
        assert len(item.listings) == 3
        assert all(len(listing.photos) == 1 for listing in item.listings)
        assert len(item.buyer_photos) == 2
        assert all(listing.item_id == item.item_id for listing in item.listings)
        for listing in item.listings:
            assert custom.item_of(listing.listing_id) is item
    listing_ids = [listing.listing_id for listing in custom.listings()]
    assert len(set(listing_ids)) == len(listing_ids) == 90
    keys = custom.photo_keys()
    assert len(set(keys)) == len(keys) == 30 * (3 + 2)


def test_default_counts(catalog: EvalCatalog) -> None:
    for item in catalog.items:
        assert len(item.listings) >= 2
        assert all(len(listing.photos) == 2 for listing in item.listings)
        assert len(item.buyer_photos) == 3


def test_labels_index_the_vocabulary(catalog: EvalCatalog) -> None:
    assert ATTRIBUTES == ("category", "colour", "shape", "material")
    assert set(VOCABULARY) == set(ATTRIBUTES)
    assert set(VOCABULARY["colour"]) == set(COLOURS)
    for item in catalog.items:
        assert set(item.labels) == set(ATTRIBUTES)
        for name, label in item.labels.items():
            assert VOCABULARY[name][label] == getattr(item, name)
        assert item.colour.capitalize() in item.title


def test_every_value_is_reachable_and_balanced(catalog: EvalCatalog) -> None:
    for name in ATTRIBUTES:
        counts = Counter(getattr(item, name) for item in catalog.items)
        assert set(counts) == set(VOCABULARY[name]), name
        if name != "shape":  # print shapes only occur on prints
            assert max(counts.values()) - min(counts.values()) <= 1, counts
    for item in catalog.items:
        prints = ("portrait", "landscape", "square", "round")
        assert (item.shape in prints) == (item.category == "print")


def test_product_and_buyer_photos(catalog: EvalCatalog) -> None:
    for item in catalog.items[:11]:
        shots = [_decode(catalog.photo_bytes(key)) for key in item.listings[0].photos]
        buyers = [_decode(catalog.photo_bytes(key)) for key in item.buyer_photos[:1]]
        for shot in shots:
            assert shot.size == (320, 320)
            # A plain light backdrop at the corners.
            grey = np.asarray(shot.convert("L"), dtype=np.float32)
            assert min(grey[2, 2], grey[2, -3], grey[-3, 2], grey[-3, -3]) > 150
        for buyer in buyers:
            assert buyer.size in ((400, 300), (300, 400))
            # Phone photos: compressed much harder than the sellers' shots.
            assert _mean_quantisation(buyer) > 1.5 * _mean_quantisation(shots[0])
            # Not a plain backdrop: the frame is busy.
            grey = np.asarray(buyer.convert("L"), dtype=np.float32)
            assert grey.std() > 15


def test_same_attributes_still_look_different() -> None:
    big = build_eval_catalog(3000, seed=11)
    groups: dict[tuple[str, ...], list[EvalItem]] = {}
    for item in big.items:
        groups.setdefault(tuple(getattr(item, name) for name in ATTRIBUTES), []).append(item)
    twins = [group for group in groups.values() if len(group) > 1]
    drawn = next(g for g in twins if g[0].category != "print")
    framed = next(g for g in twins if g[0].category == "print")
    for first, second in (drawn[:2], framed[:2]):
        a, b = (
            np.asarray(
                item_template(big.seed, int(item.item_id.split("-")[1]) - 1)
                .convert("RGB")
                .resize((96, 96)),
                dtype=np.float32,
            )
            for item in (first, second)
        )
        assert np.abs(a - b).mean() > 8, (first.title, second.title)


def test_two_listings_of_an_item_are_different_shots(catalog: EvalCatalog) -> None:
    item = catalog.items[2]
    photos = [catalog.photo_bytes(listing.photos[0]) for listing in item.listings]
    assert len(set(photos)) == len(photos)


def test_unknown_keys_are_refused(catalog: EvalCatalog) -> None:
    listing = catalog.items[0].listings[0]
    for key in ("eval-9999-a-0.jpg", listing.listing_id, "eval-01-a-0.jpg", "../etc/passwd"):
        with pytest.raises(KeyError):
            catalog.photo_bytes(key)
    with pytest.raises(KeyError):
        render_photos(catalog, [listing.listing_id], workers=1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"items": 0},
        {"listings_per_item": 1},
        {"photos_per_listing": 0},
        {"buyer_photos_per_item": 0},
        {"val_share": 0.5, "test_share": 0.5},
    ],
)
def test_bad_arguments(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        build_eval_catalog(**kwargs)  # type: ignore[arg-type]


def test_light_imports() -> None:
    """Rendering reads the bundled photographs by path: it never imports scikit-image or
    scikit-learn, and `models` never imports `lookalike`."""
    code = (
        "import sys\n"
        "from models.evalset.catalog import build_eval_catalog\n"
        "c = build_eval_catalog(12)\n"
        "assert all(c.photo_bytes(k) for i in c.items if i.category == 'print' for k in i.photos)\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('skimage', 'sklearn', 'lookalike', 'torch'))\n"
        "assert not heavy, heavy\n"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=root)


def test_items_are_distinct(catalog: EvalCatalog) -> None:
    ids = [item.item_id for item in catalog.items]
    assert len(set(ids)) == len(ids)
    # Titles name the four attributes, so they repeat rarely.
    assert max(Counter(item.title for item in catalog.items).values()) < 5
