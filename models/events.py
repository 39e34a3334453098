"""The listing event contract: pydantic models and the JSON codec of worker and publisher."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    TypeAdapter,
    ValidationError,
    field_validator,
)

MAX_IMAGES = 10
# States a listing can be in; only "active" listings are searchable.
ListingState = Literal["active", "inactive", "draft", "sold_out", "expired", "removed"]
SEARCHABLE_STATE = "active"


class EventError(ValueError):
    """An event that cannot be applied; `reason` is a short machine code for dead letters."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _check_image_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError("image url must use http or https")
    if not parts.hostname:
        raise ValueError("image url has no host")
    return url


def _check_aware(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("occurred_at must carry a timezone")
    return value


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


ImageURL = Annotated[str, Field(min_length=1, max_length=2048), AfterValidator(_check_image_url)]
Timestamp = Annotated[
    datetime, AfterValidator(_check_aware), PlainSerializer(_iso, return_type=str, when_used="json")
]
Identifier = Annotated[str, Field(min_length=1, max_length=200)]
# The amount travels as a string so no float rounding ever touches money.
Amount = Annotated[Decimal, PlainSerializer(str, return_type=str, when_used="json")]


class _Model(BaseModel):
    # Unknown fields are ignored so producers can add fields without dead-lettering every event.
    model_config = ConfigDict(frozen=True, extra="ignore")


class Price(_Model):
    """A price: a decimal amount (as a JSON string) and an ISO 4217 currency code."""

    amount: Amount
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]

    @field_validator("amount", mode="before")
    @classmethod
    def _amount_is_decimal_string(cls, value: object) -> Decimal:
        if not isinstance(value, str | Decimal):
            raise ValueError("amount must be a decimal string such as '24.00'")
        try:
            amount = Decimal(value)
        except InvalidOperation as exc:
            raise ValueError("amount is not a decimal number") from exc
        if not amount.is_finite() or amount < 0:
            raise ValueError("amount must be a finite, non-negative number")
        return amount


class ImageRef(_Model):
    """One photo of a listing."""

    url: ImageURL


class ListingUpserted(_Model):
    """A listing was created or edited; the event carries its full current state."""

    type: Literal["listing.upserted"] = "listing.upserted"
    listing_id: Identifier
    version: Annotated[int, Field(ge=0, strict=True)]
    occurred_at: Timestamp
    state: ListingState
    title: Annotated[str, Field(max_length=1000)]
    category: Annotated[str, Field(min_length=1, max_length=500)]
    price: Price
    shop_id: Identifier
    images: Annotated[list[ImageRef], Field(min_length=1, max_length=MAX_IMAGES)]

    @property
    def image_urls(self) -> list[str]:
        return [image.url for image in self.images]

    @property
    def searchable(self) -> bool:
        return self.state == SEARCHABLE_STATE


class ListingDeleted(_Model):
    """A listing was removed from the catalog."""

    type: Literal["listing.deleted"] = "listing.deleted"
    listing_id: Identifier
    version: Annotated[int, Field(ge=0, strict=True)]
    occurred_at: Timestamp


ListingEvent = Annotated[ListingUpserted | ListingDeleted, Field(discriminator="type")]

_ADAPTER: TypeAdapter[ListingUpserted | ListingDeleted] = TypeAdapter(ListingEvent)


def _summarise(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False, include_input=False)[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "event"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def parse_event(value: bytes) -> ListingUpserted | ListingDeleted:
    """Decode and validate one event; raise EventError("not_json" | "invalid_event") otherwise."""
    try:
        data = json.loads(value)
    except (UnicodeDecodeError, ValueError) as exc:
        raise EventError("not_json", f"event is not UTF-8 JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise EventError("invalid_event", "event is not a JSON object")
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        raise EventError("invalid_event", _summarise(exc)) from exc


def encode_event(event: ListingUpserted | ListingDeleted) -> bytes:
    """The UTF-8 JSON bytes of an event, as published on the topic."""
    return event.model_dump_json().encode()


def event_key(event: ListingUpserted | ListingDeleted) -> bytes:
    """The message key: the listing id, so every event of a listing lands on one partition."""
    return event.listing_id.encode()
