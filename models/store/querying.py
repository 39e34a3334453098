"""What both backends share: records to listings and hits, and search/similar over `_nearest`."""

from __future__ import annotations

import functools
from abc import abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any

from models.store.filters import TOMBSTONE, Conditions, conditions
from models.store.maxsim import Matrix, as_matrix, matched_image_index, normalized, stored_matrix
from models.store.types import (
    Hit,
    ListingNotFound,
    ListingPoint,
    QueryVectors,
    SearchFilters,
    StoredListing,
    Vector,
    VectorStore,
    payload_version,
    point_id,
)


def stored_listing(record: Any, with_vectors: bool) -> StoredListing:
    """A Record or ScoredPoint of either engine (both have id, payload, vector) as a listing;
    a tombstone's placeholder vector is not one of the listing's."""
    payload = dict(record.payload or {})
    listing_id = str(payload.get("listing_id", record.id))
    vectors: list[Vector] = []
    if with_vectors and not StoredListing(listing_id, payload).tombstone:
        m = stored_matrix(record.vector)
        vectors = [] if m is None else [[float(x) for x in row] for row in m]
    return StoredListing(listing_id=listing_id, payload=payload, vectors=vectors)


def check_listing_payload(listing_id: str, payload: dict[str, Any]) -> None:
    """Refuse a listing write that would change its identity or pass for a tombstone (filters
    tell tombstones by their "tombstone" field; only tombstone() writes one)."""
    if payload.get("listing_id", listing_id) != listing_id:
        raise ValueError("listing_id is the point's identity and cannot be changed")
    if TOMBSTONE in payload:
        raise ValueError("a listing's payload has no tombstone field: call tombstone()")


# One listing of a bulk write as the engines take it: id, vectors (rows), payload with its id.
BatchPoint = tuple[str, list[Vector], dict[str, Any]]


def checked_batch(
    points: Sequence[ListingPoint], dim: int
) -> tuple[list[BatchPoint], dict[str, int]]:
    """A bulk write's listings, each checked as upsert_listing checks one, and the new version
    of each versioned one (for the batch's write condition)."""
    batch: list[BatchPoint] = []
    versions: dict[str, int] = {}
    seen: set[str] = set()
    for point in points:
        lid = point.listing_id
        if lid in seen:
            raise ValueError(f"listing {lid!r} appears twice in one bulk write")
        seen.add(lid)
        m = as_matrix(point.vectors, dim, f"listing {lid!r}")
        check_listing_payload(lid, point.payload)
        version = payload_version(point.payload)
        if version is not None:
            versions[lid] = version
        batch.append((lid, m.tolist(), {**point.payload, "listing_id": lid}))
    return batch, versions


def placeholder_vector(dim: int) -> list[Vector]:
    """The one vector a tombstone carries (every point needs one; no filter lets it match)."""
    return [[1.0] + [0.0] * (dim - 1)]


def hits(points: Iterable[Any], query: Matrix) -> list[Hit]:
    """Scored points (returned with their vectors) as hits, each naming its best-matching photo."""
    unit_query = normalized(query)
    found = []
    for p in points:
        listing = stored_listing(p, with_vectors=False)
        # A one-photo listing matched with its only photo; another's vectors are read only if
        # its matched photo is asked for (see Hit.match).
        one_photo = len(listing.payload.get("image_urls") or ()) == 1
        match: int | Callable[[], int] = (
            0 if one_photo else functools.partial(matched_image_index, unit_query, p)
        )
        found.append(Hit(listing.listing_id, float(p.score), listing.payload, match))
    return found


# MaxSim sums one best cosine per query photo: divided by their number it is a cosine again, so
# a search by one photo and a listing's "more like this" share one scale (see Hit.score).


def _raw_threshold(query: Matrix, min_score: float | None) -> float | None:
    """The engine's score threshold (a MaxSim sum) for a per-photo `min_score`."""
    return None if min_score is None else min_score * query.shape[0]


def _per_photo(found: list[Hit], query: Matrix) -> list[Hit]:
    """The engine's MaxSim sums as per-photo scores."""
    n = query.shape[0]
    return [replace(hit, score=hit.score / n) for hit in found]


class QueryingStore(VectorStore):
    """search and similar, written once; a backend supplies the nearest-neighbour query."""

    _name: str
    _dim: int

    @abstractmethod
    async def _nearest(
        self, query: Matrix, k: int, where: Conditions, offset: int, threshold: float | None
    ) -> list[Hit]:
        """The k best listings for a query multivector under the given conditions, after the
        `offset` best, with raw MaxSim scores of at least `threshold`."""

    @abstractmethod
    async def _nearest_batch(
        self, queries: Sequence[tuple[Matrix, Conditions]], k: int, thresholds: list[float | None]
    ) -> list[list[Hit]]:
        """_nearest for each (query, conditions), in one request; one threshold per query."""

    async def _ranked(
        self, query: Matrix, k: int, where: Conditions, offset: int, min_score: float | None
    ) -> list[Hit]:
        if k < 1:
            return []
        if offset < 0:
            raise ValueError(f"offset must be 0 or more, got {offset}")
        found = await self._nearest(query, k, where, offset, _raw_threshold(query, min_score))
        return _per_photo(found, query)

    async def search(
        self,
        vectors: QueryVectors,
        k: int,
        filters: SearchFilters | None = None,
        *,
        offset: int = 0,
        min_score: float | None = None,
    ) -> list[Hit]:
        query = as_matrix(vectors, self._dim, "query")
        where = conditions(filters if filters is not None else SearchFilters())
        return await self._ranked(query, k, where, offset, min_score)

    async def search_batch(
        self,
        queries: Sequence[tuple[QueryVectors, SearchFilters | None]],
        k: int,
        *,
        min_score: float | None = None,
    ) -> list[list[Hit]]:
        if not queries or k < 1:
            return [[] for _ in queries]
        planned = [
            (as_matrix(vectors, self._dim, f"query {i}"), conditions(filters or SearchFilters()))
            for i, (vectors, filters) in enumerate(queries)
        ]
        thresholds = [_raw_threshold(query, min_score) for query, _ in planned]
        found = await self._nearest_batch(planned, k, thresholds)
        return [_per_photo(hits, query) for hits, (query, _) in zip(found, planned, strict=True)]

    async def similar(
        self,
        listing_id: str,
        k: int,
        filters: SearchFilters | None = None,
        *,
        offset: int = 0,
        min_score: float | None = None,
    ) -> list[Hit]:
        source = await self.get(listing_id, with_vectors=True)
        if source is None or source.tombstone:
            raise ListingNotFound(f"listing {listing_id!r} is not in {self._name!r}")
        query = as_matrix(source.vectors, self._dim, f"listing {listing_id!r}")
        where = conditions(
            filters if filters is not None else SearchFilters(),
            exclude_point_ids=[point_id(listing_id)],
        )
        return await self._ranked(query, k, where, offset, min_score)
