"""Duplicate groups: a listing whose photos are near-identical to a live listing's joins that
listing's group when its vectors are written, so search can answer one hit per product.

The group is a payload field (`duplicate_group`), set by every writer of vectors (the indexer,
backfill, reindex) from the one query the writer makes for it: the listing's own photos against
the live collection, best hit above LOOKALIKE_DUPLICATE_THRESHOLD. It stays current without a
batch job: a listing that changes its photos is grouped again on its write; a deleted one leaves
its group to the others, which still share the id. A group id is opaque: it names no listing, so
a listing that leaves a group it started cannot be confused with the group it left.

Writes side by side could each miss the other (both query before either writes): the indexer
groups and writes one listing at a time per process, and a batch writer compares the batch's
listings with each other too. Two workers writing copies of one photo within the same few
milliseconds can still start two groups; the next write of either joins them again.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import numpy as np

from models.store.maxsim import normalized
from models.store.types import Hit, QueryVectors, SearchFilters

GROUP_FIELD: Final = "duplicate_group"
_GROUP_NAMESPACE = uuid.UUID("5f0d3a9c-7e2b-4c61-8d3f-1a6b9e2c4d70")


def stored_group(payload: Mapping[str, Any]) -> str | None:
    """The duplicate_group a stored payload names; None for one written before groups existed
    (reindex gives it one)."""
    value = payload.get(GROUP_FIELD)
    return value if isinstance(value, str) and value else None


def group_key(payload: Mapping[str, Any], listing_id: str) -> str:
    """The group a stored listing is in: its duplicate_group, or its own id when it names none."""
    return stored_group(payload) or listing_id


def new_group(listing_id: str, version: int) -> str:
    """A group of its own for this version of a listing: the same on every redelivery, and never
    another listing's id."""
    return "g-" + uuid.uuid5(_GROUP_NAMESPACE, f"{listing_id}\x00{version}").hex


class Searcher(Protocol):
    """What grouping needs of a store."""

    async def search(
        self,
        vectors: QueryVectors,
        k: int,
        filters: SearchFilters | None = None,
        *,
        offset: int = 0,
        min_score: float | None = None,
    ) -> list[Hit]: ...


class BatchSearcher(Protocol):
    """What grouping a bulk write needs of a store."""

    async def search_batch(
        self,
        queries: Sequence[tuple[QueryVectors, SearchFilters | None]],
        k: int,
        *,
        min_score: float | None = None,
    ) -> list[list[Hit]]: ...


@dataclass(frozen=True)
class Grouped:
    """A listing to be written, with the photos it is grouped by."""

    listing_id: str
    version: int
    vectors: QueryVectors


async def nearest_group(
    store: Searcher, listing: Grouped, threshold: float | None
) -> tuple[str, float] | None:
    """The group of the live listing (not this one) whose photos best match this listing's, with
    the score, if it reaches `threshold` (None: grouping is off)."""
    if threshold is None:
        return None
    others = SearchFilters(exclude_listing_ids=(listing.listing_id,))
    return _best_group(await store.search(listing.vectors, 1, others, min_score=threshold))


def _best_group(hits: Sequence[Hit]) -> tuple[str, float] | None:
    """The group of a search's best hit, with its score; None when nothing was found."""
    return (group_key(hits[0].payload, hits[0].listing_id), hits[0].score) if hits else None


async def duplicate_group(store: Searcher, listing: Grouped, threshold: float | None) -> str:
    """The group this listing is written with: its nearest live neighbour's above the threshold,
    else one of its own."""
    found = await nearest_group(store, listing, threshold)
    return found[0] if found is not None else new_group(listing.listing_id, listing.version)


async def batch_groups(
    store: BatchSearcher, batch: Sequence[Grouped], threshold: float | None
) -> list[str]:
    """duplicate_group for each listing of a batch written at once: against the live collection
    (one batched search for the whole batch) and against the batch's earlier listings, whichever
    matches better."""
    own = [new_group(listing.listing_id, listing.version) for listing in batch]
    if threshold is None or not batch:
        return own
    queries = [
        (listing.vectors, SearchFilters(exclude_listing_ids=(listing.listing_id,)))
        for listing in batch
    ]
    live = await store.search_batch(queries, 1, min_score=threshold)
    units = [normalized(np.asarray(listing.vectors, dtype=np.float32)) for listing in batch]
    photos = np.concatenate(units)  # every photo of the batch, listing after listing
    starts = np.cumsum([0] + [len(unit) for unit in units[:-1]])
    positions: dict[str, list[int]] = {}
    groups: list[str] = []
    for i, (listing, unit, hits) in enumerate(zip(batch, units, live, strict=True)):
        found = _best_group(hits)
        if i:
            # MaxSim against every earlier listing of the batch in one product: the best of each
            # listing's photos per query photo, averaged over the query's photos.
            sims = unit @ photos[: starts[i]].T
            scores = np.maximum.reduceat(sims, starts[:i], axis=1).mean(axis=0)
            # An older version of the same listing is replaced by this one, not matched.
            scores[positions.get(listing.listing_id, [])] = -np.inf
            best = int(np.argmax(scores))
            if scores[best] >= threshold and (found is None or scores[best] > found[1]):
                found = (groups[best], float(scores[best]))
        groups.append(found[0] if found is not None else own[i])
        positions.setdefault(listing.listing_id, []).append(i)
    return groups
