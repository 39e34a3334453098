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


def dataset_schema() -> dict[str, Any]:
    """The JSON Schema of one line of a dataset manifest (`train --data`, `eval --data`)."""
    from models.dataset.manifest import ManifestLine

    generated = ManifestLine.model_json_schema(mode="validation")
    for own in ("title", "description"):
        generated.pop(own, None)
    return {
        "$schema": DIALECT,
        "title": "lookalike dataset manifest line",
        "description": "One line of a JSON lines dataset manifest: one listing, its photos and "
        "labels. Photo paths are relative to the manifest's folder; http(s) URLs are fetched once "
        "into the cache folder. Unknown fields are refused.",
        **generated,
    }


# Every contract `lookalike schema KIND` prints.
SCHEMAS: dict[str, Callable[[], dict[str, Any]]] = {
    "events": events_schema,
    "dataset": dataset_schema,
}


def schema_for(kind: str) -> dict[str, Any]:
    """The JSON Schema of the contract named `kind` (a key of SCHEMAS)."""
    try:
        build = SCHEMAS[kind]
    except KeyError:
        raise ValueError(f"no schema {kind!r}; known: {', '.join(sorted(SCHEMAS))}") from None
    return build()
