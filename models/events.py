"""The listing event contract: pydantic models and the JSON codec of worker and publisher."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    field_validator,
)

MAX_IMAGES = 10
# States a listing can be in; only "active" listings are searchable.
ListingState = Literal["active", "inactive", "draft", "sold_out", "expired", "removed"]
SEARCHABLE_STATE = "active"
# A plain decimal: digits, optionally a point and more digits. No sign, exponent or spaces, so
# every producer's amount reads the same everywhere (the JSON Schema carries the same pattern).
AMOUNT_PATTERN = r"^[0-9]+(\.[0-9]+)?$"


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


def _plain(value: Decimal) -> str:
    # Never an exponent ("1E+2"): what is published must parse again under AMOUNT_PATTERN.
    return format(value, "f")


ImageURL = Annotated[
    str,
    Field(
        min_length=1,
        max_length=2048,
        json_schema_extra={"format": "uri", "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://[^/?#]+"},
    ),
    AfterValidator(_check_image_url),
]
Timestamp = Annotated[
    datetime, AfterValidator(_check_aware), PlainSerializer(_iso, return_type=str, when_used="json")
]
Identifier = Annotated[str, Field(min_length=1, max_length=200)]
Version = Annotated[
    int,
    Field(
        ge=0,
        strict=True,
        description="Increases with every change of the listing. An event applies only if its "
        "version is greater than the one the index holds for the listing, deletions included; "
        "any other event changes nothing.",
    ),
]
OccurredAt = Annotated[
    Timestamp,
    Field(
        description="When the change happened in the catalog: an RFC 3339 date-time with a "
        "timezone (Z or an offset); freshness is measured from it."
    ),
]
# The amount travels as a string so no float rounding ever touches money.
Amount = Annotated[
    Decimal,
    PlainSerializer(_plain, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": AMOUNT_PATTERN}),
]


def _type_is_required(schema: dict[str, Any]) -> None:
    # The topic's reader picks the event model by `type`, so on the wire it is required; the
    # default only saves typing it when an event is built in Python.
    schema["required"] = ["type", *(n for n in schema.get("required", []) if n != "type")]
    schema["properties"]["type"].pop("default", None)


class _Model(BaseModel):
    # Unknown fields are ignored so producers can add fields without dead-lettering every event.
    model_config = ConfigDict(frozen=True, extra="ignore")


class _Event(_Model):
    model_config = ConfigDict(json_schema_extra=_type_is_required)


class Price(_Model):
    """A price: a decimal amount (as a JSON string) and an ISO 4217 currency code."""

    amount: Annotated[
        Amount,
        Field(
            description='A non-negative decimal number as a JSON string, such as "24.00": '
            "no float rounding ever touches it.",
            examples=["24.00"],
        ),
    ]
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code, upper case.")]

    @field_validator("amount", mode="before")
    @classmethod
    def _amount_is_decimal_string(cls, value: object) -> Decimal:
        if not isinstance(value, str | Decimal):
            raise ValueError("amount must be a decimal string such as '24.00'")
        if isinstance(value, str) and not re.fullmatch(AMOUNT_PATTERN, value):
            raise ValueError("amount must be digits with an optional decimal point, like '24.00'")
        try:
            amount = Decimal(value)
        except InvalidOperation as exc:
            raise ValueError("amount is not a decimal number") from exc
        if not amount.is_finite() or amount < 0:
            raise ValueError("amount must be a finite, non-negative number")
        return amount


class ImageRef(_Model):
    """One photo of a listing."""

    url: Annotated[
        ImageURL,
        Field(
            description="Where the indexer fetches the photo: http or https, with a host. "
            "Loopback, private and link-local addresses are refused unless "
            "LOOKALIKE_ALLOW_PRIVATE_IMAGE_HOSTS is set."
        ),
    ]


class ListingUpserted(_Event):
    """A listing was created or edited; the event carries its full current state."""

    type: Annotated[Literal["listing.upserted"], Field(description="The kind of event.")] = (
        "listing.upserted"
    )
    listing_id: Annotated[
        Identifier,
        Field(description="The listing's id in the marketplace; also the message key."),
    ]
    version: Version
    occurred_at: OccurredAt
    state: Annotated[
        ListingState,
        Field(description="Only active listings are searchable; any other state hides it."),
    ]
    title: Annotated[str, Field(max_length=1000, description="Shown with each result.")]
    category: Annotated[
        str,
        Field(
            min_length=1,
            max_length=500,
            description="A slash-separated path, most general first; searches filter by prefix.",
            examples=["home_and_living/kitchen/mugs"],
        ),
    ]
    price: Annotated[Price, Field(description="The listing's price.")]
    shop_id: Annotated[Identifier, Field(description="The seller's shop; searches filter by it.")]
    images: Annotated[
        list[ImageRef],
        Field(
            min_length=1,
            max_length=MAX_IMAGES,
            description="The listing's photos, 1 to 10, in display order. A listing is found "
            "by its best-matching photo; one none of whose photos can be fetched and decoded "
            "goes to the dead-letter topic.",
        ),
    ]

    @property
    def image_urls(self) -> list[str]:
        return [image.url for image in self.images]

    @property
    def searchable(self) -> bool:
        return self.state == SEARCHABLE_STATE


class ListingDeleted(_Event):
    """A listing was removed from the catalog."""

    type: Annotated[Literal["listing.deleted"], Field(description="The kind of event.")] = (
        "listing.deleted"
    )
    listing_id: Annotated[
        Identifier,
        Field(description="The listing's id in the marketplace; also the message key."),
    ]
    version: Version
    occurred_at: OccurredAt


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
