"""Query-string parameters shared by search and similar: k, paging, cut-off and filters, strictly
validated."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from multidict import MultiMapping

from models.images import Crop
from models.store.types import SearchFilters
from query.errors import ApiError, shown
from query.openapi import MAX_EXCLUDE, MAX_ID_LENGTH, MAX_OFFSET
from query.settings import MAX_K

KNOWN = frozenset(
    {
        "k",
        "offset",
        "min_score",
        "category",
        "currency",
        "price_min",
        "price_max",
        "shop_id",
        "exclude",
    }
)
COLLAPSE_VALUES = ("duplicates", "none")
_CURRENCY = re.compile(r"[A-Z]{3}")
# The smallest region a crop may name, as a share of the photo's width and of its height.
MIN_CROP_FRACTION = 0.05
# Rounding in a client's arithmetic (0.1 + 0.9) must not make a whole-width crop "outside".
_CROP_SLACK = 1e-6


@dataclass(frozen=True)
class SearchParams:
    """How many results, from which rank, how similar at least, and which listings may be
    among them."""

    k: int
    filters: SearchFilters
    offset: int = 0
    min_score: float | None = None
    # One hit per duplicate group (the group's best under the filters), or every listing.
    collapse: bool = True


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


def _integer(query: MultiMapping[str], name: str, default: int, low: int, high: int) -> int:
    raw = _single(query, name)
    if raw is None:
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise _bad(name, "must be an integer") from None
    if not low <= value <= high:
        raise _bad(name, f"must be between {low} and {high}")
    return value


def _min_score(query: MultiMapping[str]) -> float | None:
    raw = _single(query, "min_score")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise _bad("min_score", "must be a number") from None
    # Scores are cosine similarities: nothing lies outside [-1, 1].
    if not (math.isfinite(value) and -1 <= value <= 1):
        raise _bad("min_score", "must be between -1 and 1")
    return value


def _currency(query: MultiMapping[str]) -> str | None:
    raw = _single(query, "currency")
    if raw is None:
        return None
    value = raw.strip().upper()
    if not _CURRENCY.fullmatch(value):
        raise _bad("currency", "must be a three-letter ISO 4217 code, such as EUR")
    return value


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


def refuse_parameters(query: MultiMapping[str], known: frozenset[str]) -> None:
    """A 400 for the first query parameter not in `known`."""
    unknown = sorted(set(query) - known)
    if unknown:
        more = f" and {len(unknown) - 1} more" if len(unknown) > 1 else ""
        listed = f"known: {', '.join(sorted(known))}" if known else "this route takes none"
        raise ApiError(
            400,
            "unknown_parameter",
            f"unknown query parameter {shown(unknown[0])}{more}; {listed}",
        )


def parse_crop(query: MultiMapping[str]) -> Crop | None:
    """crop=x,y,w,h: a region inside the photo in fractions of its sides, each side at least
    MIN_CROP_FRACTION of the photo's."""
    raw = _single(query, "crop")
    if raw is None:
        return None
    parts = raw.split(",")
    if len(parts) != 4:
        raise _bad("crop", "must be x,y,w,h: four numbers, fractions of the photo")
    try:
        x, y, w, h = (float(part) for part in parts)
    except ValueError:
        raise _bad("crop", "must be x,y,w,h: four numbers, fractions of the photo") from None
    return checked_crop(x, y, w, h)


def checked_crop(x: float, y: float, w: float, h: float) -> Crop:
    """The region x, y, w, h if it lies inside the photo and is not too thin; else 400."""
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        raise _bad("crop", "must be finite numbers")
    if x < 0 or y < 0 or x + w > 1 + _CROP_SLACK or y + h > 1 + _CROP_SLACK:
        raise _bad("crop", "must lie inside the photo: x, y >= 0, x + w <= 1, y + h <= 1")
    if w < MIN_CROP_FRACTION or h < MIN_CROP_FRACTION:
        raise _bad("crop", f"width and height must be at least {MIN_CROP_FRACTION} of the photo's")
    return Crop(x, y, min(w, 1 - x), min(h, 1 - y))


def _collapse(query: MultiMapping[str]) -> bool:
    raw = _single(query, "collapse")
    if raw is None:
        return True
    if raw not in COLLAPSE_VALUES:
        raise _bad("collapse", f"must be one of {', '.join(COLLAPSE_VALUES)}")
    return raw == "duplicates"


def parse_search_params(
    query: MultiMapping[str],
    default_k: int,
    also: frozenset[str] = frozenset(),
    collapsible: bool = True,
) -> SearchParams:
    """k, paging, cut-off and filters from a query string; anything unknown or malformed is a
    400, not a guess. `also`: further parameters the route reads itself; `collapsible`: the
    route takes `collapse`."""
    refuse_parameters(query, KNOWN | also | ({"collapse"} if collapsible else set()))
    category = _text(query, "category")
    if category is not None:
        category = "/".join(p for p in category.split("/") if p)
        if not category:
            raise _bad("category", "must name a category")
    price_min = _price(query, "price_min")
    price_max = _price(query, "price_max")
    if price_min is not None and price_max is not None and price_min > price_max:
        raise _bad("price_min", "must not exceed price_max")
    currency = _currency(query)
    if currency is None and (price_min is not None or price_max is not None):
        # No conversion rates: 30 means nothing until it says 30 of what.
        raise ApiError(
            400,
            "currency_required",
            "a price range needs currency (e.g. currency=EUR): prices are compared only within "
            "one currency",
            parameter="currency",
        )
    filters = SearchFilters(
        category_prefix=category,
        price_min=price_min,
        price_max=price_max,
        currency=currency,
        shop_id=_text(query, "shop_id"),
        exclude_listing_ids=_exclude(query),
    )
    return SearchParams(
        k=_integer(query, "k", default_k, 1, MAX_K),
        filters=filters,
        offset=_integer(query, "offset", 0, 0, MAX_OFFSET),
        min_score=_min_score(query),
        collapse=collapsible and _collapse(query),
    )
