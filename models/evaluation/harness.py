"""Scores a model on an evaluation split: buyer photo -> listing and listing -> listing retrieval.

`lookalike eval` indexes the split's listings into a real store (Qdrant Edge in a scratch
directory, MaxSim over each listing's photos, exactly as the live index does) and queries it with
the held-out buyer photos and with each listing's own photos (the "similar listings" query).
Training's per-epoch validation ranks the same way in memory (`rank_in_memory`) because opening a
store every epoch buys nothing there; a test holds the two rankings equal.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from models.evalset.catalog import ATTRIBUTES, EvalCatalog, EvalItem
from models.evaluation.metrics import RetrievalScores, attribute_agreement, retrieval_scores
from models.settings import StoreSettings
from models.store.factory import open_store
from models.store.types import ListingPoint, VectorStore, category_prefixes

Vectors = Mapping[str, npt.NDArray[np.float32]]
# Results per query scored for attribute agreement (the page shows about ten).
AGREEMENT_K = 10


@dataclass(frozen=True)
class Rankings:
    """Every query's ranked listing ids, and what would have been right."""

    buyer: list[list[str]]
    buyer_relevant: list[set[str]]
    buyer_attributes: list[dict[str, str]]
    listing: list[list[str]]
    listing_relevant: list[set[str]]


@dataclass(frozen=True)
class EvalReport:
    model_id: str
    split: str
    items: int
    listings: int
    buyer_to_listing: RetrievalScores
    listing_to_listing: RetrievalScores
    # Attribute -> mean share of a buyer query's top 10 with the item's value.
    attribute_agreement: dict[str, float]
    seconds: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "split": self.split,
            "items": self.items,
            "listings": self.listings,
            "buyer_to_listing": self.buyer_to_listing.as_dict(),
            "listing_to_listing": self.listing_to_listing.as_dict(),
            "attribute_agreement@10": dict(self.attribute_agreement),
            "seconds": round(self.seconds, 2),
        }


def split_photo_keys(items: Sequence[EvalItem]) -> list[str]:
    """Every photo an evaluation of these items embeds: listing shots, then buyer photos."""
    keys = [key for item in items for listing in item.listings for key in listing.photos]
    return keys + [key for item in items for key in item.buyer_photos]


def _attributes(item: EvalItem) -> dict[str, str]:
    return {name: str(getattr(item, name)) for name in ATTRIBUTES}


def _queries(
    items: Sequence[EvalItem],
) -> tuple[list[tuple[str, EvalItem]], list[tuple[str, EvalItem]]]:
    buyer = [(key, item) for item in items for key in item.buyer_photos]
    listing = [(listing.listing_id, item) for item in items for listing in item.listings]
    return buyer, listing


def _listing_relevant(item: EvalItem, listing_id: str) -> set[str]:
    return {other.listing_id for other in item.listings if other.listing_id != listing_id}


def _matrix(vectors: Vectors, keys: Sequence[str]) -> npt.NDArray[np.float32]:
    return np.stack([vectors[key] for key in keys]).astype(np.float32, copy=False)


def rank_in_memory(items: Sequence[EvalItem], vectors: Vectors) -> Rankings:
    """The rankings the store would return, by MaxSim in numpy (vectors are L2-normalised): a
    listing's score for a query is the sum over query vectors of the best cosine among its photos.
    """
    listings = [listing for item in items for listing in item.listings]
    ids = [listing.listing_id for listing in listings]
    stored = [_matrix(vectors, listing.photos) for listing in listings]

    def ranked(query: npt.NDArray[np.float32], exclude: str | None) -> list[str]:
        scores = np.array([(query @ m.T).max(axis=1).sum() for m in stored])
        # Stable sort, so ties keep catalog order like the engine's deterministic tie-break would.
        order = np.argsort(-scores, kind="stable")
        return [ids[i] for i in order if ids[i] != exclude]

    buyer_q, listing_q = _queries(items)
    by_id = {listing.listing_id: listing for listing in listings}
    return Rankings(
        buyer=[ranked(_matrix(vectors, [key]), None) for key, _ in buyer_q],
        buyer_relevant=[{x.listing_id for x in item.listings} for _, item in buyer_q],
        buyer_attributes=[_attributes(item) for _, item in buyer_q],
        listing=[ranked(_matrix(vectors, by_id[lid].photos), lid) for lid, _ in listing_q],
        listing_relevant=[_listing_relevant(item, lid) for lid, item in listing_q],
    )


def _payload(item: EvalItem, listing_id: str) -> dict[str, Any]:
    return {
        "listing_id": listing_id,
        "title": item.title,
        "category": item.category,
        "category_path": category_prefixes(item.category),
        "state": "active",
        "item_id": item.item_id,
        **{name: str(getattr(item, name)) for name in ATTRIBUTES if name != "category"},
    }


async def index_items(store: VectorStore, items: Sequence[EvalItem], vectors: Vectors) -> int:
    """Upsert every listing of the items with its photos' vectors; returns how many."""
    count = 0
    for item in items:
        for listing in item.listings:
            rows = [vectors[key].tolist() for key in listing.photos]
            await store.upsert_listing(
                ListingPoint(listing.listing_id, rows, _payload(item, listing.listing_id))
            )
            count += 1
    return count


async def rank_through_store(
    store: VectorStore, items: Sequence[EvalItem], vectors: Vectors
) -> Rankings:
    """Rankings from the store's own search (buyer photos) and similar (listings) queries, each
    over the whole split so average precision sees every relevant listing."""
    total = await store.count()
    buyer_q, listing_q = _queries(items)
    buyer = [
        [hit.listing_id for hit in await store.search([vectors[key].tolist()], total)]
        for key, _ in buyer_q
    ]
    listing = [[hit.listing_id for hit in await store.similar(lid, total)] for lid, _ in listing_q]
    return Rankings(
        buyer=buyer,
        buyer_relevant=[{x.listing_id for x in item.listings} for _, item in buyer_q],
        buyer_attributes=[_attributes(item) for _, item in buyer_q],
        listing=listing,
        listing_relevant=[_listing_relevant(item, lid) for lid, item in listing_q],
    )


def report(
    model_id: str, split: str, items: Sequence[EvalItem], rankings: Rankings, seconds: float = 0.0
) -> EvalReport:
    listing_attributes = {
        listing.listing_id: _attributes(item) for item in items for listing in item.listings
    }
    return EvalReport(
        model_id=model_id,
        split=split,
        items=len(items),
        listings=len(listing_attributes),
        buyer_to_listing=retrieval_scores(rankings.buyer, rankings.buyer_relevant),
        listing_to_listing=retrieval_scores(rankings.listing, rankings.listing_relevant),
        attribute_agreement=attribute_agreement(
            rankings.buyer, rankings.buyer_attributes, listing_attributes, AGREEMENT_K
        ),
        seconds=seconds,
    )


async def evaluate_in_store(
    catalog: EvalCatalog,
    split: str,
    model_id: str,
    vectors: Vectors,
    store_settings: StoreSettings | None = None,
) -> EvalReport:
    """Index the split's listings into a scratch Edge store (or the given one), query it, score."""
    started = time.perf_counter()
    items = catalog.split(split)
    dim = int(next(iter(vectors.values())).shape[0])
    with tempfile.TemporaryDirectory(prefix="lookalike-eval-") as scratch:
        settings = store_settings or StoreSettings(
            index_path=Path(scratch), collection_alias="eval"
        )
        store = open_store(settings, model_id, dim)
        try:
            await store.ensure_collection()
            await index_items(store, items, vectors)
            rankings = await rank_through_store(store, items, vectors)
        finally:
            await store.close()
    return report(model_id, split, items, rankings, time.perf_counter() - started)
