"""One hit per duplicate group: a page of the best hit of each group, and how many other
listings each group holds under the same filters (one facet query for the page)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

from models.duplicates import GROUP_FIELD, group_key, stored_group
from models.store.types import Hit, SearchFilters, VectorStore

# Candidates fetched per group wanted, at first: a page whose groups are large fetches more.
OVERFETCH = 4
# The most candidates one page looks at (the store's k): MAX_OFFSET + MAX_K groups of 4.
MAX_CANDIDATES = 4400

# The store's search or similar for the k best from the top, with the request's filters.
Fetch = Callable[[int], Awaitable[list[Hit]]]


@dataclass(frozen=True)
class Page:
    hits: list[Hit]
    # There may be more after this page.
    full: bool


def _best_per_group(hits: Sequence[Hit], skip_group: str | None) -> list[Hit]:
    seen: set[str] = set() if skip_group is None else {skip_group}
    best: list[Hit] = []
    for hit in hits:
        key = group_key(hit.payload, hit.listing_id)
        if key not in seen:
            seen.add(key)
            best.append(hit)
    return best


async def collapsed_page(fetch: Fetch, offset: int, k: int, skip_group: str | None = None) -> Page:
    """Groups offset to offset + k, each as its best hit; candidates are fetched from the top,
    so the pages of an unchanged index follow one another without overlap. `skip_group`: a
    group left out (a listing's own, for more like this)."""
    wanted = offset + k
    candidates = min(wanted * OVERFETCH, MAX_CANDIDATES)
    while True:
        hits = await fetch(candidates)
        best = _best_per_group(hits, skip_group)
        exhausted = len(hits) < candidates
        if len(best) >= wanted or exhausted or candidates >= MAX_CANDIDATES:
            page = best[offset:wanted]
            more = len(best) > wanted or not exhausted
            return Page(page, full=len(page) == k and more)
        candidates = min(candidates * OVERFETCH, MAX_CANDIDATES)


async def duplicate_counts(
    store: VectorStore, hits: Sequence[Hit], filters: SearchFilters | None
) -> dict[str, int]:
    """listing_id -> how many other listings share its group under `filters`."""
    groups = {h.listing_id: stored_group(h.payload) for h in hits}
    named = sorted({g for g in groups.values() if g is not None})
    if not named:
        return {listing_id: 0 for listing_id in groups}
    within = replace(filters or SearchFilters(), duplicate_groups=tuple(named))
    counts = await store.facet(GROUP_FIELD, within, limit=len(named))
    return {
        listing_id: max(counts.get(g, 1) - 1, 0) if g is not None else 0
        for listing_id, g in groups.items()
    }
