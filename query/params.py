"""Query-string parameters shared by search and similar: k and the filters, strictly validated."""

from __future__ import annotations

import math
from dataclasses import dataclass

from multidict import MultiMapping

from models.store.types import SearchFilters
from query.errors import ApiError, shown
from query.openapi import MAX_EXCLUDE, MAX_ID_LENGTH
from query.settings import MAX_K

KNOWN = frozenset({"k", "category", "price_min", "price_max", "shop_id", "exclude"})


@dataclass(frozen=True)
class SearchParams:
    """How many results and which listings may be among them."""

    k: int
    filters: SearchFilters


def _bad(name: str, message: str) -> ApiError:
    return ApiError(400, "bad_parameter", f"{name}: {message}", parameter=name)


def _single(query: MultiMapping[str], name: str) -> str | None:
    values = query.getall(name, [])
    if not values:
        return None
    if len(values) > 1:
        raise _bad(name, "given more than once")
    return values[0]


def _text(query: MultiMapping[str], name: str) -> str | None:
    value = _single(query, name)
    if value is None:
        return None
    value = value.strip()
    if not value:
        raise _bad(name, "must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise _bad(name, f"longer than {MAX_ID_LENGTH} characters")
    return value


def _price(query: MultiMapping[str], name: str) -> float | None:
    raw = _single(query, name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise _bad(name, "must be a number") from None
    if not math.isfinite(value) or value < 0:
        raise _bad(name, "must be a finite number, 0 or more")
    return value


def _k(query: MultiMapping[str], default: int) -> int:
    raw = _single(query, "k")
    if raw is None:
        return default
    try:
        k = int(raw.strip())
    except ValueError:
        raise _bad("k", "must be an integer") from None
    if not 1 <= k <= MAX_K:
        raise _bad("k", f"must be between 1 and {MAX_K}")
    return k


def _exclude(query: MultiMapping[str]) -> tuple[str, ...]:
    ids: list[str] = []
    for value in query.getall("exclude", []):
        for part in value.split(","):
            part = part.strip()
            if not part:
                continue
            if len(part) > MAX_ID_LENGTH:
                raise _bad("exclude", f"an id is longer than {MAX_ID_LENGTH} characters")
            ids.append(part)
    if len(ids) > MAX_EXCLUDE:
        raise _bad("exclude", f"at most {MAX_EXCLUDE} ids")
    return tuple(dict.fromkeys(ids))


def parse_search_params(query: MultiMapping[str], default_k: int) -> SearchParams:
    """k and filters from a query string; anything unknown or malformed is a 400, not a guess."""
    unknown = sorted(set(query) - KNOWN)
    if unknown:
        more = f" and {len(unknown) - 1} more" if len(unknown) > 1 else ""
        raise ApiError(
            400,
            "unknown_parameter",
            f"unknown query parameter {shown(unknown[0])}{more}; known: {', '.join(sorted(KNOWN))}",
        )
    category = _text(query, "category")
    if category is not None:
        category = "/".join(p for p in category.split("/") if p)
        if not category:
            raise _bad("category", "must name a category")
    price_min = _price(query, "price_min")
    price_max = _price(query, "price_max")
    if price_min is not None and price_max is not None and price_min > price_max:
        raise _bad("price_min", "must not exceed price_max")
    filters = SearchFilters(
        category_prefix=category,
        price_min=price_min,
        price_max=price_max,
        shop_id=_text(query, "shop_id"),
        exclude_listing_ids=_exclude(query),
    )
    return SearchParams(k=_k(query, default_k), filters=filters)
