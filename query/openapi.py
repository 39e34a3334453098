"""The OpenAPI 3.1 description of every route, served at /openapi.json."""

from __future__ import annotations

from typing import Any

from models.payload import ListingPayload
from query.settings import MAX_K

MAX_ID_LENGTH = 200
MAX_EXCLUDE = 100
# Paging goes this deep: the engine ranks offset + k listings to answer a page.
MAX_OFFSET = 1000
SCORE_DESCRIPTION = (
    "Cosine similarity in [-1, 1], higher is closer: for a listing's several photos (more like "
    "this), the mean over them of each one's best match. One scale for search and similar."
)

_ERROR_STATUSES = {
    "400": "Bad parameters or a malformed body.",
    "404": "No such listing or route.",
    "413": "The body or the image is larger than allowed.",
    "415": "Not an image, an image format that is not accepted, or a body that is neither "
    "multipart/form-data nor application/json.",
    "422": "The image is truncated, corrupt or a decompression bomb, or image_url could not "
    "be fetched.",
    "503": "Not ready: the model or the store is not available.",
}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _errors(*statuses: str) -> dict[str, Any]:
    return {status: _error(_ERROR_STATUSES[status]) for status in statuses}


def _json(ref: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
    }


# What a search result and a listing both always carry.
_LISTING_REQUIRED = ["id", "title", "category", "price", "shop_id"]

_COLLAPSE: dict[str, Any] = {
    "name": "collapse",
    "in": "query",
    "description": "`duplicates`: one listing per duplicate group, the group's best match under "
    "the filters, with `duplicates` saying how many others it holds; `none`: every listing.",
    "schema": {"type": "string", "enum": ["duplicates", "none"], "default": "duplicates"},
}

_FILTER_PARAMETERS: list[dict[str, Any]] = [
    {
        "name": "k",
        "in": "query",
        "description": "How many listings to return.",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_K, "default": 24},
    },
    {
        "name": "offset",
        "in": "query",
        "description": "Skip this many of the best listings: the next page starts at offset + k "
        "(the answer's `next` link). Pages are stable while the index is unchanged.",
        "schema": {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET, "default": 0},
    },
    {
        "name": "min_score",
        "in": "query",
        "description": "Only listings scoring at least this (see `score`); GET /v1/config "
        "serves a calibrated cut-off.",
        "schema": {"type": "number", "minimum": -1, "maximum": 1},
    },
    {
        "name": "category",
        "in": "query",
        "description": "Category prefix, slash-separated: `home_and_living` matches "
        "`home_and_living/kitchen/mugs`.",
        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH},
    },
    {
        "name": "currency",
        "in": "query",
        "description": "Only listings priced in this ISO 4217 currency; required with a price "
        "range, which is meant in it (prices are never converted).",
        "schema": {"type": "string", "pattern": "^[A-Za-z]{3}$"},
    },
    {
        "name": "price_min",
        "in": "query",
        "description": "Lowest price, inclusive, in `currency`.",
        "schema": {"type": "number", "minimum": 0},
    },
    {
        "name": "price_max",
        "in": "query",
        "description": "Highest price, inclusive, in `currency`; not below price_min.",
        "schema": {"type": "number", "minimum": 0},
    },
    {
        "name": "shop_id",
        "in": "query",
        "description": "Only listings of this shop.",
        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH},
    },
    {
        "name": "exclude",
        "in": "query",
        "description": "Listing ids to leave out: repeat the parameter, or separate ids by commas.",
        "style": "form",
        "explode": True,
        "schema": {
            "type": "array",
            "maxItems": MAX_EXCLUDE,
            "items": {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH},
        },
    },
]

_CROP = {
    "name": "crop",
    "in": "query",
    "description": "Search a region of the photo: x,y,w,h in fractions of its width and height "
    "(after EXIF orientation), e.g. 0.5,0,0.5,1 for the right half. Inside the photo, each side "
    "at least 0.05 of the photo's and 32 pixels.",
    "schema": {"type": "string", "pattern": r"^\s*[0-9.eE+-]+(\s*,\s*[0-9.eE+-]+){3}\s*$"},
}

_LISTING_ID = {
    "name": "listing_id",
    "in": "path",
    "required": True,
    "description": "The listing's id.",
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH},
}

_STORED_FIELDS: dict[str, Any] = ListingPayload.model_json_schema()["properties"]


def _stored(name: str, nullable: bool = False) -> dict[str, Any]:
    """The schema of a field the API shows as stored (models.payload.ListingPayload); nullable
    where payloads written before the field existed lack it."""
    schema = {
        k: v for k, v in _STORED_FIELDS[name].items() if k in ("type", "items", "description")
    }
    if nullable:
        schema["type"] = [schema["type"], "null"]
    return schema


_PRICE = {
    "type": "object",
    "required": ["amount", "currency"],
    "properties": {
        "amount": {"type": ["string", "null"], "description": 'Decimal amount, e.g. "24.00".'},
        "currency": {"type": ["string", "null"]},
    },
}

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string", "description": "Stable machine-readable reason."},
                    "message": {"type": "string", "description": "What went wrong, for people."},
                },
            }
        },
    },
    "Price": _PRICE,
    "SearchResult": {
        "type": "object",
        "required": [*_LISTING_REQUIRED, "image_url", "score", "duplicates"],
        "properties": {
            "id": {"type": "string"},
            "title": _stored("title"),
            "category": _stored("category"),
            "price": {"$ref": "#/components/schemas/Price"},
            "shop_id": _stored("shop_id"),
            "image_url": {
                "type": ["string", "null"],
                "description": "The listing's photo that matched best.",
            },
            "score": {
                "type": "number",
                "minimum": -1,
                "maximum": 1,
                "description": SCORE_DESCRIPTION,
            },
            "duplicates": {
                "type": ["integer", "null"],
                "minimum": 0,
                "description": "How many other listings under the same filters share this one's "
                "duplicate group (near-identical photos, usually other shops): GET "
                "/v1/listings/{id}/duplicates lists them. null with collapse=none.",
            },
        },
    },
    "SearchResponse": {
        "type": "object",
        "required": ["listings", "took_ms", "model_id"],
        "properties": {
            "listings": {
                "type": "array",
                "maxItems": MAX_K,
                "items": {"$ref": "#/components/schemas/SearchResult"},
            },
            "took_ms": {"type": "number", "minimum": 0},
            "model_id": {"type": "string"},
            "offset": {"type": "integer", "minimum": 0, "description": "Rank of the first."},
            "next": {
                "type": ["string", "null"],
                "description": "The next page: this request's path and query with the offset "
                "moved on (POST the same photo to it for a search); null when this page is the "
                "last.",
            },
        },
    },
    "Config": {
        "type": "object",
        "required": ["relevance_threshold", "default_k", "max_k", "max_offset"],
        "properties": {
            "relevance_threshold": {
                "type": "number",
                "minimum": -1,
                "maximum": 1,
                "description": "The calibrated cut-off: results scoring at least this were "
                "relevant at 80% precision or more on the evaluation catalog. Pass it as "
                "min_score, or draw a divider where scores fall below it.",
            },
            "default_k": {"type": "integer"},
            "max_k": {"type": "integer"},
            "max_offset": {"type": "integer"},
        },
    },
    "Category": {
        "type": "object",
        "required": ["path", "name", "count", "children"],
        "properties": {
            "path": {"type": "string", "description": "The category prefix to filter by."},
            "name": {"type": "string", "description": "Its last part."},
            "count": {"type": "integer", "minimum": 0, "description": "Live listings in it."},
            "children": {"type": "array", "items": {"$ref": "#/components/schemas/Category"}},
        },
    },
    "Categories": {
        "type": "object",
        "required": ["categories", "total"],
        "properties": {
            "categories": {"type": "array", "items": {"$ref": "#/components/schemas/Category"}},
            "total": {"type": "integer", "minimum": 0, "description": "Every live listing."},
        },
    },
    "Listing": {
        "type": "object",
        "required": [*_LISTING_REQUIRED, "state", "image_urls", "version"],
        "properties": {
            "id": {"type": "string"},
            "title": _stored("title"),
            "category": _stored("category"),
            "price": {"$ref": "#/components/schemas/Price"},
            "shop_id": _stored("shop_id"),
            "state": _stored("state"),
            "image_urls": _stored("image_urls"),
            "version": _stored("version", nullable=True),
            "indexed_at": _stored("indexed_at", nullable=True),
        },
    },
    "SearchJson": {
        "type": "object",
        "description": "Exactly one of image_base64 and image_url.",
        "additionalProperties": False,
        "oneOf": [
            {"required": ["image_base64"], "not": {"required": ["image_url"]}},
            {"required": ["image_url"], "not": {"required": ["image_base64"]}},
        ],
        "properties": {
            "image_base64": {
                "type": "string",
                "minLength": 1,
                "description": "The photo's file bytes, base64 (standard alphabet, padded).",
            },
            "image_url": {
                "type": "string",
                "minLength": 1,
                "maxLength": 2048,
                "description": "An http(s) URL of the photo; private and loopback hosts are "
                "refused unless the service allows them.",
            },
            "crop": {
                "type": "array",
                "minItems": 4,
                "maxItems": 4,
                "items": {"type": "number", "minimum": 0, "maximum": 1},
                "description": "The crop query parameter as [x, y, w, h]; not both.",
            },
        },
    },
    "SearchUpload": {
        "type": "object",
        "required": ["image"],
        "additionalProperties": False,
        "properties": {
            "image": {
                "type": "string",
                "format": "binary",
                "description": "The photo: JPEG, PNG, WebP or GIF.",
            }
        },
    },
    "Health": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string", "enum": ["ok"]}},
    },
    "Ready": {
        "type": "object",
        "required": ["status", "model_id", "dim", "collection"],
        "properties": {
            "status": {"type": "string", "enum": ["ready"]},
            "model_id": {"type": "string"},
            "dim": {"type": "integer"},
            "collection": {"type": "string"},
        },
    },
}


def openapi_spec(server_url: str | None = None) -> dict[str, Any]:
    """The whole description; `server_url` fills `servers` when the caller knows its own address."""
    search_errors = _errors("400", "413", "415", "422", "503")
    spec: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "lookalike search",
            "version": "1",
            "description": "Search a live marketplace catalog by photo. Filters and k are query "
            "parameters for every body kind. Every error is JSON: "
            '{"error": {"code", "message"}}.',
        },
        "paths": {
            "/v1/search": {
                "post": {
                    "operationId": "search",
                    "summary": "Listings that look like a photo, or like a region of it.",
                    "parameters": [_CROP, *_FILTER_PARAMETERS, _COLLAPSE],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "multipart/form-data": {
                                "schema": {"$ref": "#/components/schemas/SearchUpload"}
                            },
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/SearchJson"}
                            },
                        },
                    },
                    "responses": {
                        "200": _json("SearchResponse", "Best matches first."),
                        **search_errors,
                    },
                }
            },
            "/v1/listings/{listing_id}": {
                "get": {
                    "operationId": "getListing",
                    "summary": "One stored listing.",
                    "parameters": [_LISTING_ID],
                    "responses": {
                        "200": _json("Listing", "The listing as indexed."),
                        **_errors("400", "404", "503"),
                    },
                }
            },
            "/v1/listings/{listing_id}/similar": {
                "get": {
                    "operationId": "similarListings",
                    "summary": "More like this: listings whose photos match this listing's "
                    "photos; with collapse=duplicates (the default) other products only, one "
                    "listing per duplicate group.",
                    "parameters": [_LISTING_ID, *_FILTER_PARAMETERS, _COLLAPSE],
                    "responses": {
                        "200": _json("SearchResponse", "Best matches first, never the listing."),
                        **_errors("400", "404", "503"),
                    },
                }
            },
            "/v1/listings/{listing_id}/duplicates": {
                "get": {
                    "operationId": "duplicateListings",
                    "summary": "The other listings of this listing's duplicate group (its photos, "
                    "usually from other shops), under the filters.",
                    "parameters": [_LISTING_ID, *_FILTER_PARAMETERS],
                    "responses": {
                        "200": _json("SearchResponse", "Best matches first, never the listing."),
                        **_errors("400", "404", "503"),
                    },
                }
            },
            "/v1/config": {
                "get": {
                    "operationId": "config",
                    "summary": "What a client needs to know: the calibrated relevance cut-off "
                    "and the limits of k and offset.",
                    "responses": {"200": _json("Config", "The service's search settings.")},
                }
            },
            "/v1/categories": {
                "get": {
                    "operationId": "categories",
                    "summary": "The category tree of the live listings, with counts, from the "
                    "index.",
                    "responses": {
                        "200": _json("Categories", "Every category prefix in use."),
                        **_errors("400", "503"),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "health",
                    "summary": "Liveness: the process answers.",
                    "responses": {"200": _json("Health", "Alive.")},
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "ready",
                    "summary": "Readiness: model loaded, store reachable, dimensions match.",
                    "responses": {
                        "200": _json("Ready", "Ready to search."),
                        **_errors("503"),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "Prometheus metrics.",
                    "responses": {
                        "200": {
                            "description": "Text exposition format.",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/": {
                "get": {
                    "operationId": "searchPage",
                    "summary": "The search page: a person's way in, built on /v1/search and "
                    "/v1/listings/{listing_id}/similar.",
                    "responses": {
                        "200": {
                            "description": "An HTML page; its script and style are under /static/.",
                            "content": {"text/html": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/v1/schema/events": {
                "get": {
                    "operationId": "eventSchema",
                    "summary": "The JSON Schema (2020-12) of the listing events the indexer reads "
                    "from the listings topic: listing.upserted and listing.deleted.",
                    "responses": {
                        "200": {
                            "description": "A JSON Schema document.",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This description.",
                    "responses": {
                        "200": {
                            "description": "OpenAPI 3.1 document.",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
        },
        "components": {"schemas": _SCHEMAS},
    }
    if server_url is not None:
        spec["servers"] = [{"url": server_url}]
    return spec
