"""SearchFilters and version guards as each backend's native filter, and the payload indexes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

import qdrant_edge as qe
from qdrant_client import models as qm

from models.duplicates import GROUP_FIELD
from models.payload import IndexKind, payload_graph_fields, payload_indexes
from models.store.types import SearchFilters, category_prefixes, point_id

ACTIVE_STATE: Final = "active"
VERSION: Final = "version"
TOMBSTONE: Final = "tombstone"
TOMBSTONED_AT: Final = "tombstoned_at"

# Every payload field a filter touches has an index, so filtering happens inside the vector search.
# Declared on the fields of models.payload: a new filtered field is one edit there.
PAYLOAD_INDEXES: Final[dict[str, IndexKind]] = payload_indexes()
# The indexed fields whose large values are linked in the HNSW graph (models.payload.indexed).
GRAPH_INDEXED: Final[frozenset[str]] = payload_graph_fields()

# Live listings are the points without a "tombstone" field: only tombstone() writes one (True),
# and qdrant-edge 0.9's MatchValue(True) matches no stored boolean, so both engines test emptiness.
_edge_live = qe.IsEmptyCondition(TOMBSTONE)
_server_live = qm.IsEmptyCondition(is_empty=qm.PayloadField(key=TOMBSTONE))


def category_key(prefix: str) -> str | None:
    """The category_path element a prefix matches ("a//b/" -> "a/b"); None for an empty prefix."""
    prefixes = category_prefixes(prefix)
    return prefixes[-1] if prefixes else None


@dataclass(frozen=True)
class Conditions:
    """Backend-neutral form of a filter: exact keyword matches, a price range, excluded points."""

    keywords: tuple[tuple[str, str], ...] = ()
    # Keyword fields that must hold one of several values.
    any_of: tuple[tuple[str, tuple[str, ...]], ...] = ()
    price_min: float | None = None
    price_max: float | None = None
    excluded_point_ids: frozenset[str] = frozenset()
    # Tombstones are only ever read by scroll(include_tombstones=True); nothing else sees them.
    tombstones: bool = False

    @property
    def empty(self) -> bool:
        return (
            not self.keywords
            and not self.any_of
            and self.price_min is None
            and self.price_max is None
            and not self.excluded_point_ids
            and self.tombstones
        )


def conditions(filters: SearchFilters | None, exclude_point_ids: Iterable[str] = ()) -> Conditions:
    """Flatten SearchFilters (None = no narrowing but live listings only) and extra point ids to
    exclude. Tombstones are excluded even without a state filter (only_active=False)."""
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
    if filters.currency is not None:
        keywords.append(("currency", filters.currency))
    if filters.only_active:
        keywords.append(("state", ACTIVE_STATE))
    excluded.update(point_id(listing_id) for listing_id in filters.exclude_listing_ids)
    any_of: list[tuple[str, tuple[str, ...]]] = []
    if filters.duplicate_groups:
        any_of.append((GROUP_FIELD, tuple(filters.duplicate_groups)))
    return Conditions(
        keywords=tuple(keywords),
        any_of=tuple(any_of),
        price_min=filters.price_min,
        price_max=filters.price_max,
        excluded_point_ids=frozenset(excluded),
    )


def edge_filter(c: Conditions) -> qe.Filter | None:
    """The Qdrant Edge filter for these conditions; None when nothing narrows."""
    if c.empty:
        return None
    must: list[qe.FieldCondition | qe.IsEmptyCondition] = [
        qe.FieldCondition(key, match=qe.MatchValue(value)) for key, value in c.keywords
    ]
    must.extend(qe.FieldCondition(key, match=qe.MatchAny(list(values))) for key, values in c.any_of)
    if not c.tombstones:
        must.append(_edge_live)
    if c.price_min is not None or c.price_max is not None:
        must.append(
            qe.FieldCondition("price", range=qe.RangeFloat(gte=c.price_min, lte=c.price_max))
        )
    must_not: list[qe.HasIdCondition] = []
    if c.excluded_point_ids:
        must_not.append(qe.HasIdCondition(set(c.excluded_point_ids)))
    return qe.Filter(must=list(must) or None, must_not=list(must_not) or None)


# Versions compare as float64 in both engines (their only numeric range): exact below 2**53.
def _edge_not_older(version: int) -> qe.FieldCondition:
    return qe.FieldCondition(VERSION, range=qe.RangeFloat(gte=float(version)))


def edge_write_condition(version: int) -> qe.Filter:
    """The condition of a versioned upsert: the stored point has no version this new or newer
    (a point without one, legacy, matches; an absent point is inserted by the engine anyway)."""
    return qe.Filter(must_not=[_edge_not_older(version)])


def edge_batch_write_condition(versions: Mapping[str, int]) -> qe.Filter | None:
    """edge_write_condition for a batch: one condition, exact per point, since each clause names
    its point. `versions` maps each versioned listing of the batch to its new version."""
    if not versions:
        return None
    clauses: list[qe.ConditionType] = [
        qe.Filter(must=[qe.HasIdCondition({point_id(lid)}), _edge_not_older(v)])
        for lid, v in versions.items()
    ]
    return qe.Filter(must_not=[qe.Filter(should=clauses)])


def edge_payload_target(listing_id: str, version: int | None) -> qe.Filter:
    """The points a payload update may touch: the listing's, live, and older when versioned."""
    older: list[qe.ConditionType] | None = None if version is None else [_edge_not_older(version)]
    return qe.Filter(must=[qe.HasIdCondition({point_id(listing_id)}), _edge_live], must_not=older)


def edge_old_tombstones(older_than: float) -> qe.Filter:
    """Tombstones written before older_than (unix seconds)."""
    before = qe.FieldCondition(TOMBSTONED_AT, range=qe.RangeFloat(lt=older_than))
    return qe.Filter(must=[before], must_not=[_edge_live])


def server_filter(c: Conditions) -> qm.Filter | None:
    """The qdrant-client filter for these conditions; None when nothing narrows."""
    if c.empty:
        return None
    must: list[qm.Condition] = [
        qm.FieldCondition(key=key, match=qm.MatchValue(value=value)) for key, value in c.keywords
    ]
    must.extend(
        qm.FieldCondition(key=key, match=qm.MatchAny(any=list(values))) for key, values in c.any_of
    )
    if not c.tombstones:
        must.append(_server_live)
    if c.price_min is not None or c.price_max is not None:
        must.append(
            qm.FieldCondition(key="price", range=qm.Range(gte=c.price_min, lte=c.price_max))
        )
    must_not: list[qm.Condition] = []
    if c.excluded_point_ids:
        must_not.append(qm.HasIdCondition(has_id=sorted(c.excluded_point_ids)))
    return qm.Filter(must=must or None, must_not=must_not or None)


def _server_not_older(version: int) -> qm.FieldCondition:
    return qm.FieldCondition(key=VERSION, range=qm.Range(gte=version))


def server_write_condition(version: int) -> qm.Filter:
    """edge_write_condition for qdrant-client (its update_filter)."""
    return qm.Filter(must_not=[_server_not_older(version)])


def server_batch_write_condition(versions: Mapping[str, int]) -> qm.Filter | None:
    """edge_batch_write_condition for qdrant-client."""
    if not versions:
        return None
    clauses: list[qm.Condition] = [
        qm.Filter(must=[qm.HasIdCondition(has_id=[point_id(lid)]), _server_not_older(v)])
        for lid, v in versions.items()
    ]
    return qm.Filter(must_not=[qm.Filter(should=clauses)])


def server_payload_target(listing_id: str, version: int | None) -> qm.Filter:
    """edge_payload_target for qdrant-client."""
    must_not: list[qm.Condition] = [] if version is None else [_server_not_older(version)]
    return qm.Filter(
        must=[qm.HasIdCondition(has_id=[point_id(listing_id)]), _server_live],
        must_not=must_not or None,
    )


def server_old_tombstones(older_than: float) -> qm.Filter:
    """edge_old_tombstones for qdrant-client."""
    before = qm.FieldCondition(key=TOMBSTONED_AT, range=qm.Range(lt=older_than))
    return qm.Filter(must=[before], must_not=[_server_live])
