"""Turning stored payloads into the API's JSON shapes."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

from models.payload import ListingPayload
from models.store.types import Hit, StoredListing

_HIT_FIELDS: Final = (
    "title",
    "category",
    "price",
    "price_amount",
    "currency",
    "shop_id",
    "image_urls",
)
_LISTING_FIELDS: Final = (*_HIT_FIELDS, "state", "version", "indexed_at")


def _fields(payload: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    # Stored payloads may predate a field or come from a writer that left some out (benches):
    # a missing or malformed field renders empty, it never fails the request.
    return ListingPayload.readable(payload, names)


def _price(fields: dict[str, Any]) -> dict[str, str | None]:
    amount = fields.get("price_amount")
    if amount is None and "price" in fields:
        amount = f"{fields['price']:.2f}"
    return {"amount": amount, "currency": fields.get("currency")}


def render_hit(hit: Hit, duplicates: int | None = None) -> dict[str, Any]:
    """One search result, with the URL of the listing's photo that matched best and, when
    results are collapsed, how many other listings its duplicate group holds."""
    fields = _fields(hit.payload, _HIT_FIELDS)
    urls: list[str] = fields.get("image_urls", [])
    index = hit.matched_image_index
    image_url = urls[index] if 0 <= index < len(urls) else (urls[0] if urls else None)
    return {
        "id": hit.listing_id,
        "title": fields.get("title", ""),
        "category": fields.get("category", ""),
        "price": _price(fields),
        "shop_id": fields.get("shop_id", ""),
        "image_url": image_url,
        "score": hit.score if math.isfinite(hit.score) else 0.0,
        "duplicates": duplicates,
    }


def render_listing(listing: StoredListing) -> dict[str, Any]:
    """A stored listing as the API shows it."""
    fields = _fields(listing.payload, _LISTING_FIELDS)
    return {
        "id": listing.listing_id,
        "title": fields.get("title", ""),
        "category": fields.get("category", ""),
        "price": _price(fields),
        "shop_id": fields.get("shop_id", ""),
        "state": fields.get("state", ""),
        "image_urls": fields.get("image_urls", []),
        "version": fields.get("version"),
        "indexed_at": fields.get("indexed_at"),
    }


def category_tree(counts: Mapping[str, int]) -> list[dict[str, Any]]:
    """Facet counts of category prefixes ("a", "a/b", ...) as a tree, biggest first, each node
    with its path, last name, count and children."""
    nodes: dict[str, dict[str, Any]] = {}
    roots: list[dict[str, Any]] = []
    # Parents before children: a prefix is shorter than every path below it.
    for path in sorted(counts, key=lambda p: (p.count("/"), p)):
        parent_path, _, name = path.rpartition("/")
        node = {"path": path, "name": name, "count": counts[path], "children": []}
        nodes[path] = node
        parent = nodes.get(parent_path)
        (parent["children"] if parent is not None else roots).append(node)

    def ordered(level: list[dict[str, Any]]) -> list[dict[str, Any]]:
        level.sort(key=lambda n: (-n["count"], n["path"]))
        for n in level:
            ordered(n["children"])
        return level

    return ordered(roots)
