"""The listing event contract: validation rules and the JSON codec."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from models.events import (
    EventError,
    ListingDeleted,
    ListingUpserted,
    encode_event,
    event_key,
    parse_event,
)


def upserted(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": "listing.upserted",
        "listing_id": "L1001",
        "version": 7,
        "occurred_at": "2026-11-24T10:00:00Z",
        "state": "active",
        "title": "Hand-thrown speckled mug",
        "category": "home_and_living/kitchen/mugs",
        "price": {"amount": "24.00", "currency": "USD"},
        "shop_id": "S42",
        "images": [
            {"url": "https://img.example/L1001/0.jpg"},
            {"url": "http://img.example/L1001/1.jpg"},
        ],
    }
    event.update(overrides)
    return event


def raw(event: dict[str, Any]) -> bytes:
    return json.dumps(event).encode()


def reason_of(value: bytes) -> str:
    with pytest.raises(EventError) as info:
        parse_event(value)
    return info.value.reason


def test_design_example_upsert_parses_with_its_fields() -> None:
    event = parse_event(raw(upserted()))
    assert isinstance(event, ListingUpserted)
    assert event.listing_id == "L1001"
    assert event.version == 7
    assert event.occurred_at == datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
    assert event.price.amount == Decimal("24.00")
    assert event.price.currency == "USD"
    assert event.image_urls == [
        "https://img.example/L1001/0.jpg",
        "http://img.example/L1001/1.jpg",
    ]
    assert event.searchable


def test_design_example_delete_parses() -> None:
    value = (
        b'{"type": "listing.deleted", "listing_id": "L1001", "version": 8,'
        b' "occurred_at": "2026-11-24T11:00:00Z"}'
    )
    event = parse_event(value)
    assert isinstance(event, ListingDeleted)
    assert (event.listing_id, event.version) == ("L1001", 8)


@pytest.mark.parametrize("event", [upserted(), upserted(state="sold_out", version=0)])
def test_encode_then_parse_is_identity(event: dict[str, Any]) -> None:
    parsed = parse_event(raw(event))
    again = parse_event(encode_event(parsed))
    assert again == parsed


def test_encoding_keeps_the_amount_a_string_and_time_in_utc() -> None:
    event = parse_event(raw(upserted(occurred_at="2026-11-24T12:00:00+02:00")))
    encoded = json.loads(encode_event(event))
    assert encoded["price"] == {"amount": "24.00", "currency": "USD"}
    assert encoded["occurred_at"] == "2026-11-24T10:00:00Z"
    assert encoded["type"] == "listing.upserted"


def test_key_is_the_listing_id() -> None:
    assert event_key(parse_event(raw(upserted(listing_id="L9")))) == b"L9"


def test_inactive_states_are_not_searchable() -> None:
    assert not parse_event(raw(upserted(state="inactive"))).searchable  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "value",
    [b"not json", b"\xff\xfe\x00", b"", b'{"type": "listing.upserted"'],
)
def test_bytes_that_are_not_json_are_refused_as_not_json(value: bytes) -> None:
    assert reason_of(value) == "not_json"


@pytest.mark.parametrize(
    "event",
    [
        upserted(images=[]),
        upserted(images=[{"url": f"https://img.example/{i}.jpg"} for i in range(11)]),
        upserted(images=[{"url": "ftp://img.example/0.jpg"}]),
        upserted(images=[{"url": "file:///etc/passwd"}]),
        upserted(images=[{"url": "https:///no-host.jpg"}]),
        upserted(images=[{"url": "javascript:alert(1)"}]),
        upserted(version=-1),
        upserted(version="7"),
        upserted(version=7.5),
        upserted(version=True),
        upserted(state="for_sale_maybe"),
        upserted(price={"amount": 24.0, "currency": "USD"}),
        upserted(price={"amount": "-1.00", "currency": "USD"}),
        upserted(price={"amount": "NaN", "currency": "USD"}),
        upserted(price={"amount": "cheap", "currency": "USD"}),
        upserted(price={"amount": "1.00", "currency": "usd"}),
        upserted(occurred_at="2026-11-24T10:00:00"),
        upserted(occurred_at="yesterday"),
        upserted(listing_id=""),
        upserted(type="listing.renamed"),
        {k: v for k, v in upserted().items() if k != "shop_id"},
        {"type": "listing.deleted", "listing_id": "L1", "occurred_at": "2026-11-24T10:00:00Z"},
    ],
)
def test_schema_violations_are_refused_as_invalid_event(event: dict[str, Any]) -> None:
    assert reason_of(raw(event)) == "invalid_event"


@pytest.mark.parametrize("value", [b"[1, 2]", b'"listing"', b"42", b"null"])
def test_json_that_is_not_an_object_is_invalid(value: bytes) -> None:
    assert reason_of(value) == "invalid_event"


def test_ten_images_and_version_zero_are_accepted() -> None:
    images = [{"url": f"https://img.example/{i}.jpg"} for i in range(10)]
    event = parse_event(raw(upserted(images=images, version=0)))
    assert isinstance(event, ListingUpserted)
    assert len(event.image_urls) == 10


def test_error_message_names_the_offending_field() -> None:
    with pytest.raises(EventError) as info:
        parse_event(raw(upserted(version=-3)))
    assert "version" in str(info.value)


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    event = parse_event(raw(upserted(colour="blue")))
    assert isinstance(event, ListingUpserted)
    assert "colour" not in json.loads(encode_event(event))
