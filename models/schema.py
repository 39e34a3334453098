"""JSON Schemas of lookalike's published contracts, generated from their pydantic models."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

DIALECT = "https://json-schema.org/draft/2020-12/schema"


def events_schema() -> dict[str, Any]:
    """The JSON Schema of one message value on the listings topic: a `listing.upserted` or a
    `listing.deleted` event, told apart by `type`."""
    from pydantic import TypeAdapter

    from models.events import ListingEvent

    generated = TypeAdapter(ListingEvent).json_schema(mode="validation")
    return {
        "$schema": DIALECT,
        "title": "lookalike listing event",
        "description": "The value of a message on the listings topic (LOOKALIKE_TOPIC): one "
        "UTF-8 JSON object, keyed by its listing_id. Unknown fields are ignored, so producers "
        "may send more than this.",
        **generated,
    }


# Every contract `lookalike schema KIND` prints; a new one (a dataset manifest) is one entry.
SCHEMAS: dict[str, Callable[[], dict[str, Any]]] = {"events": events_schema}


def schema_for(kind: str) -> dict[str, Any]:
    """The JSON Schema of the contract named `kind` (a key of SCHEMAS)."""
    try:
        build = SCHEMAS[kind]
    except KeyError:
        raise ValueError(f"no schema {kind!r}; known: {', '.join(sorted(SCHEMAS))}") from None
    return build()
