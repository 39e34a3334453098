"""SearchFilters as each backend's native filter, and the payload indexes filters rely on."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

import qdrant_edge as qe
from qdrant_client import models as qm

from models.store.types import SearchFilters, category_prefixes, point_id

ACTIVE_STATE: Final = "active"

# Every payload field a filter touches has an index, so filtering happens inside the vector search.
PAYLOAD_INDEXES: Final[dict[str, Literal["keyword", "float"]]] = {
    "category_path": "keyword",
    "price": "float",
    "currency": "keyword",
    "shop_id": "keyword",
    "state": "keyword",
    "listing_id": "keyword",
}


def category_key(prefix: str) -> str | None:
    """The category_path element a prefix matches ("a//b/" -> "a/b"); None for an empty prefix."""
    prefixes = category_prefixes(prefix)
    return prefixes[-1] if prefixes else None


@dataclass(frozen=True)
class Conditions:
    """Backend-neutral form of a filter: exact keyword matches, a price range, excluded points."""

    keywords: tuple[tuple[str, str], ...] = ()
    price_min: float | None = None
    price_max: float | None = None
    excluded_point_ids: frozenset[str] = frozenset()

    @property
    def empty(self) -> bool:
        return (
            not self.keywords
            and self.price_min is None
            and self.price_max is None
            and not self.excluded_point_ids
        )


def conditions(filters: SearchFilters | None, exclude_point_ids: Iterable[str] = ()) -> Conditions:
    """Flatten SearchFilters (None = no narrowing) and extra point ids to exclude."""
    excluded = set(exclude_point_ids)
    if filters is None:
        return Conditions(excluded_point_ids=frozenset(excluded))
    keywords: list[tuple[str, str]] = []
    if filters.category_prefix is not None:
        key = category_key(filters.category_prefix)
        if key is not None:
            keywords.append(("category_path", key))
    if filters.shop_id is not None:
        keywords.append(("shop_id", filters.shop_id))
    if filters.only_active:
        keywords.append(("state", ACTIVE_STATE))
    excluded.update(point_id(listing_id) for listing_id in filters.exclude_listing_ids)
    return Conditions(
        keywords=tuple(keywords),
        price_min=filters.price_min,
        price_max=filters.price_max,
        excluded_point_ids=frozenset(excluded),
    )


def edge_filter(c: Conditions) -> qe.Filter | None:
    """The Qdrant Edge filter for these conditions; None when nothing narrows."""
    if c.empty:
        return None
    must: list[qe.FieldCondition] = [
        qe.FieldCondition(key, match=qe.MatchValue(value)) for key, value in c.keywords
    ]
    if c.price_min is not None or c.price_max is not None:
        must.append(
            qe.FieldCondition("price", range=qe.RangeFloat(gte=c.price_min, lte=c.price_max))
        )
    must_not: list[qe.HasIdCondition] = []
    if c.excluded_point_ids:
        must_not.append(qe.HasIdCondition(set(c.excluded_point_ids)))
    return qe.Filter(must=list(must) or None, must_not=list(must_not) or None)


def server_filter(c: Conditions) -> qm.Filter | None:
    """The qdrant-client filter for these conditions; None when nothing narrows."""
    if c.empty:
        return None
    must: list[qm.Condition] = [
        qm.FieldCondition(key=key, match=qm.MatchValue(value=value)) for key, value in c.keywords
    ]
    if c.price_min is not None or c.price_max is not None:
        must.append(
            qm.FieldCondition(key="price", range=qm.Range(gte=c.price_min, lte=c.price_max))
        )
    must_not: list[qm.Condition] = []
    if c.excluded_point_ids:
        must_not.append(qm.HasIdCondition(has_id=sorted(c.excluded_point_ids)))
    return qm.Filter(must=must or None, must_not=must_not or None)
