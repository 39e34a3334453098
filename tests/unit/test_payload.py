"""The stored-payload models: fields from events, tolerant reading, indexes declared on fields."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Annotated

import pytest
from pydantic import ValidationError

from models.events import ListingUpserted
from models.payload import (
    STORED_MODELS,
    ListingPayload,
    StoredPayload,
    TombstonePayload,
    indexed,
    payload_graph_fields,
    payload_indexes,
)
from models.store.filters import PAYLOAD_INDEXES
from models.store.types import Hit, StoredListing
from query.render import render_hit, render_listing


def event(**changes: object) -> ListingUpserted:
    data: dict[str, object] = {
        "listing_id": "L1",
        "version": 7,
        "occurred_at": datetime(2024, 5, 1, 12, 30, tzinfo=timezone(timedelta(hours=2))),
        "state": "active",
        "title": "Blue mug",
        "category": "home/kitchen/mugs",
        "price": {"amount": "24.50", "currency": "EUR"},
        "shop_id": "S1",
        "images": [{"url": "https://img.test/1.jpg"}, {"url": "https://img.test/2.jpg"}],
    }
    return ListingUpserted.model_validate({**data, **changes})


def test_from_event_carries_every_event_field() -> None:
    before = datetime.now(UTC)
    payload = ListingPayload.from_event(
        event(),
        "m1",
        image_urls=["https://img.test/2.jpg"],
        image_hashes=["h2"],
        duplicate_group="g-1",
    )
    stored = payload.to_store()
    indexed_at = stored.pop("indexed_at")
    assert stored == {
        "listing_id": "L1",
        "title": "Blue mug",
        "category": "home/kitchen/mugs",
        "category_path": ["home", "home/kitchen", "home/kitchen/mugs"],
        "price": 24.5,
        "price_amount": "24.50",
        "currency": "EUR",
        "shop_id": "S1",
        "state": "active",
        "source_image_urls": ["https://img.test/1.jpg", "https://img.test/2.jpg"],
        "image_urls": ["https://img.test/2.jpg"],
        "image_hashes": ["h2"],
        "duplicate_group": "g-1",
        "version": 7,
        "model_id": "m1",
        "occurred_at": "2024-05-01T10:30:00Z",
    }
    assert indexed_at.endswith("Z")
    assert datetime.fromisoformat(indexed_at) >= before.replace(microsecond=0)


def test_event_fields_leave_the_photo_fields_out() -> None:
    payload = ListingPayload.from_event(event(), "m1", ["https://img.test/1.jpg"], ["h1"], "g-1")
    fields = payload.event_fields()
    # The duplicate group comes from the photos too: an update that keeps them keeps it.
    photo_fields = {"image_urls", "image_hashes", "duplicate_group"}
    assert set(fields) == set(ListingPayload.model_fields) - photo_fields
    assert fields["version"] == 7
    assert ListingPayload.from_event(event(), "m1").to_store()["image_urls"] == []


def test_a_tombstone_payload_is_exactly_its_five_fields() -> None:
    stored = TombstonePayload(listing_id="L1", version=3, state="deleted").to_store()
    assert set(stored) == {"listing_id", "version", "state", "tombstone", "tombstoned_at"}
    assert stored["tombstone"] is True
    assert isinstance(stored["tombstoned_at"], float)
    with pytest.raises(ValidationError):
        TombstonePayload(listing_id="L1", version=3, state="deleted", tombstone=False)


def test_payload_indexes_are_the_ones_the_model_fields_declare() -> None:
    assert payload_indexes() == PAYLOAD_INDEXES
    for name, kind in PAYLOAD_INDEXES.items():
        owners = [m for m in STORED_MODELS if name in m.model_fields]
        assert owners, name
        assert all(m.index_kinds().get(name) == kind for m in owners), name
    # Every field a filter or a version guard touches.
    assert PAYLOAD_INDEXES == {
        "category_path": "keyword",
        "duplicate_group": "keyword",
        "price": "float",
        "currency": "keyword",
        "shop_id": "keyword",
        "state": "keyword",
        "listing_id": "keyword",
        "version": "integer",
        "tombstone": "bool",
        "tombstoned_at": "float",
    }


def test_only_the_narrowing_search_filters_are_linked_in_the_graph() -> None:
    assert payload_graph_fields() == {"category_path", "price", "shop_id"}
    assert ListingPayload.graph_fields() == payload_graph_fields()
    assert TombstonePayload.graph_fields() == frozenset()


def test_a_field_linked_by_one_model_only_is_refused() -> None:
    class Other(StoredPayload):
        price: Annotated[float, indexed("float")]

    with pytest.raises(TypeError, match="price"):
        payload_graph_fields([ListingPayload, Other])


def test_a_field_indexed_two_ways_is_refused() -> None:
    class Other(StoredPayload):
        price: Annotated[str, indexed("keyword")]

    assert payload_indexes([Other]) == {"price": "keyword"}
    with pytest.raises(TypeError, match="price"):
        payload_indexes([ListingPayload, Other])


def test_readable_keeps_each_valid_field_and_drops_the_rest() -> None:
    stored = {
        "title": 5,
        "category": "a/b",
        "price": 3,
        "version": True,
        "image_urls": ["https://x/1.jpg", None, "https://x/2.jpg"],
        "unknown": "x",
    }
    assert ListingPayload.readable(stored) == {
        "category": "a/b",
        "price": 3.0,
        "image_urls": ["https://x/1.jpg", "https://x/2.jpg"],
    }
    assert ListingPayload.readable(stored, ("category", "unknown")) == {"category": "a/b"}


def test_rendering_tolerates_legacy_and_malformed_payloads() -> None:
    legacy = StoredListing("L1", {"title": "t", "price": 2, "image_urls": "nope", "version": "3"})
    assert render_listing(legacy) == {
        "id": "L1",
        "title": "t",
        "category": "",
        "price": {"amount": "2.00", "currency": None},
        "shop_id": "",
        "state": "",
        "image_urls": [],
        "version": None,
        "indexed_at": None,
    }
    full = ListingPayload.from_event(event(), "m1", ["https://img.test/1.jpg", "https://b/2.jpg"])
    hit = render_hit(Hit("L1", 0.5, full.to_store(), match=1))
    assert hit == {
        "id": "L1",
        "title": "Blue mug",
        "category": "home/kitchen/mugs",
        "price": {"amount": "24.50", "currency": "EUR"},
        "shop_id": "S1",
        "image_url": "https://b/2.jpg",
        "score": 0.5,
        "duplicates": None,
    }
    assert render_hit(Hit("L2", float("nan"), {}, match=3))["image_url"] is None
