"""Turning stored payloads into the API's JSON shapes."""

from __future__ import annotations

import math
from typing import Any

from models.store.types import Hit, StoredListing


def _text(payload: dict[str, Any], key: str) -> str:
    value = payload.get(key)
    return value if isinstance(value, str) else ""


def _optional_text(payload: dict[str, Any], key: str) -> str | None:
    value = payload.get(key)
    return value if isinstance(value, str) else None


def _urls(payload: dict[str, Any]) -> list[str]:
    urls = payload.get("image_urls")
    if not isinstance(urls, list):
        return []
    return [u for u in urls if isinstance(u, str)]


def _price(payload: dict[str, Any]) -> dict[str, str | None]:
    amount = _optional_text(payload, "price_amount")
    if amount is None and isinstance(payload.get("price"), int | float):
        amount = f"{payload['price']:.2f}"
    return {"amount": amount, "currency": _optional_text(payload, "currency")}


def render_hit(hit: Hit) -> dict[str, Any]:
    """One search result, with the URL of the listing's photo that matched best."""
    payload = hit.payload
    urls = _urls(payload)
    index = hit.matched_image_index
    image_url = urls[index] if 0 <= index < len(urls) else (urls[0] if urls else None)
    return {
        "id": hit.listing_id,
        "title": _text(payload, "title"),
        "category": _text(payload, "category"),
        "price": _price(payload),
        "shop_id": _text(payload, "shop_id"),
        "image_url": image_url,
        "score": hit.score if math.isfinite(hit.score) else 0.0,
    }


def render_listing(listing: StoredListing) -> dict[str, Any]:
    """A stored listing as the API shows it."""
    payload = listing.payload
    version = payload.get("version")
    return {
        "id": listing.listing_id,
        "title": _text(payload, "title"),
        "category": _text(payload, "category"),
        "price": _price(payload),
        "shop_id": _text(payload, "shop_id"),
        "state": _text(payload, "state"),
        "image_urls": _urls(payload),
        "version": version if isinstance(version, int) and not isinstance(version, bool) else None,
        "indexed_at": _optional_text(payload, "indexed_at"),
    }
