"""The demo catalog: deterministic, well-formed events, real photographs, live edits."""

from __future__ import annotations

import io
import random
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike.demo import REAL_PHOTOS, DemoCatalog, _reshot, build_catalog, real_photo_paths
from models.events import ListingDeleted, ListingUpserted, encode_event, parse_event

BASE = "http://127.0.0.1:9/photos"


@pytest.fixture(scope="module")
def catalog() -> DemoCatalog:
    return build_catalog(40, seed=3)


def test_same_seed_same_catalog(catalog: DemoCatalog) -> None:
    again = build_catalog(40, seed=3)
    assert again.listings == catalog.listings
    assert again.photos == catalog.photos


def test_another_seed_another_catalog(catalog: DemoCatalog) -> None:
    other = build_catalog(40, seed=4)
    assert other.listings != catalog.listings
    assert set(other.photos.values()).isdisjoint(catalog.photos.values())


def test_listings_are_complete_and_photos_exist(catalog: DemoCatalog) -> None:
    assert len(catalog.listings) == 40
    assert len({item.listing_id for item in catalog.listings}) == 40
    for item in catalog.listings:
        assert 1 <= len(item.photos) <= 4
        assert re.fullmatch(r"[a-z_]+(/[a-z_]+)+", item.category), item.category
        assert item.price > 0
        for name in item.photos:
            image = Image.open(io.BytesIO(catalog.photos[name]))
            assert image.format == "JPEG"
            assert min(image.size) >= 224
    # Every photo is distinct: a search by one photo identifies one listing.
    assert len(set(catalog.photos.values())) == len(catalog.photos)


def test_real_photographs_from_the_wheels_are_used(catalog: DemoCatalog) -> None:
    assert set(real_photo_paths()) == set(REAL_PHOTOS)
    real_titles = {photo.title for photo in REAL_PHOTOS.values()}
    drawn = [item for item in catalog.listings if item.title not in real_titles]
    real = [item for item in catalog.listings if item.title in real_titles]
    assert real and drawn


def test_events_round_trip_through_the_contract(catalog: DemoCatalog) -> None:
    events = catalog.upserts(BASE, version=5)
    assert len(events) == 40
    for event, item in zip(events, catalog.listings, strict=True):
        assert isinstance(event, ListingUpserted)
        assert parse_event(encode_event(event)) == event
        assert event.version == 5 and event.searchable
        assert event.image_urls == [f"{BASE}/{name}" for name in item.photos]


def test_edits_change_price_photo_and_delete(catalog: DemoCatalog) -> None:
    by_id = {item.listing_id: item for item in catalog.listings}
    kinds = {edit.kind: edit.listing for edit in catalog.edits}
    assert set(kinds) == {"price", "photo", "delete"}
    assert kinds["price"].price < by_id[kinds["price"].listing_id].price
    new_photos = kinds["photo"].photos
    assert set(new_photos).isdisjoint(by_id[kinds["photo"].listing_id].photos)
    assert all(name in catalog.photos for name in new_photos)
    events = catalog.edit_events(BASE, version=6)
    deleted = [e for e in events if isinstance(e, ListingDeleted)]
    assert [e.listing_id for e in deleted] == [kinds["delete"].listing_id]
    assert all(e.version == 6 for e in events)
    assert catalog.edited_ids == {edit.listing.listing_id for edit in catalog.edits}


def test_write_photos(tmp_path: Path, catalog: DemoCatalog) -> None:
    catalog.write_photos(tmp_path / "photos")
    written = {p.name: p.read_bytes() for p in (tmp_path / "photos").iterdir()}
    assert written == catalog.photos


def test_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        build_catalog(0)


def test_a_turned_reshoot_has_no_black_corners() -> None:
    # A white photo reshot: a turn that left the fill in its corners would show dark pixels.
    white = Image.new("RGB", (960, 640), (255, 255, 255))
    for seed in range(12):
        shot = Image.open(io.BytesIO(_reshot(white, random.Random(seed)))).convert("L")
        assert int(np.asarray(shot).min()) > 200, seed
        assert min(shot.size) >= 224
