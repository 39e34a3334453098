"""Retrieval scores of a dataset split: buyer photo -> listing and listing -> listing, overall,
per top-level category and per task, with each query's top 10 kept for the report.

Relevance is by group: a buyer photo's relevant listings are its listing and every listing of its
group; a listing's are the other listings of its group (a listing alone in its group is no
query). `lookalike eval` ranks through a scratch store (`rank_through_store`), training's
per-epoch validation in memory (`rank_in_memory`, the same MaxSim in numpy).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from models.dataset.dataset import DataListing
from models.evaluation.metrics import KS, RetrievalScores
from models.settings import StoreSettings
from models.store.factory import open_store
from models.store.types import ListingPoint, VectorStore, category_prefixes

Vectors = Mapping[str, npt.NDArray[np.float32]]
Kind = Literal["buyer", "listing"]
KINDS: tuple[Kind, ...] = ("buyer", "listing")
KIND_KEYS: dict[Kind, str] = {"buyer": "buyer_to_listing", "listing": "listing_to_listing"}
# Results of each query kept (for agreement and the report); recall@k needs no more than max(KS).
TOP = 10


@dataclass(frozen=True)
class Query:
    kind: Kind
    # The buyer photo's file, or the listing id.
    query: str
    listing_id: str
    top_level: str
    relevant: frozenset[str]


@dataclass(frozen=True)
class QueryResult:
    query: Query
    top: tuple[str, ...]
    average_precision: float
    # 1-based rank of the first relevant listing; None when none was ranked.
    first_hit: int | None

    def hit_at(self, k: int) -> bool:
        return self.first_hit is not None and self.first_hit <= k


def queries(listings: Sequence[DataListing]) -> list[Query]:
    by_group: dict[str, set[str]] = {}
    for x in listings:
        by_group.setdefault(x.group, set()).add(x.listing_id)
    out = [
        Query("buyer", key, x.listing_id, x.top_level, frozenset(by_group[x.group]))
        for x in listings
        for key in x.buyer_photos
    ]
    out += [
        Query("listing", x.listing_id, x.listing_id, x.top_level, frozenset(others))
        for x in listings
        if (others := by_group[x.group] - {x.listing_id})
    ]
    return out


def result_of(query: Query, ranked: Iterable[str]) -> QueryResult:
    """Score one ranking (the whole split, best first): AP, first hit, top 10."""
    top: list[str] = []
    found = 0
    total = 0.0
    first: int | None = None
    for rank, listing_id in enumerate(ranked, start=1):
        if len(top) < TOP:
            top.append(listing_id)
        if listing_id in query.relevant:
            found += 1
            total += found / rank
            first = first if first is not None else rank
    return QueryResult(query, tuple(top), total / len(query.relevant), first)


def rank_in_memory(listings: Sequence[DataListing], vectors: Vectors) -> list[QueryResult]:
    """What the store would rank, by MaxSim in numpy (vectors L2-normalised): a listing scores
    the sum over query vectors of the best cosine among its photos."""
    ids = [x.listing_id for x in listings]
    photos = np.stack([vectors[k] for x in listings for k in x.photos]).astype(np.float32)
    starts = np.cumsum([0] + [len(x.photos) for x in listings])[:-1]
    by_id = {x.listing_id: x for x in listings}
    out = []
    for q in queries(listings):
        keys = [q.query] if q.kind == "buyer" else list(by_id[q.query].photos)
        sims = np.stack([vectors[k] for k in keys]).astype(np.float32) @ photos.T
        scores = np.maximum.reduceat(sims, starts, axis=1).sum(axis=0)
        # Stable: ties keep manifest order, like the engine's deterministic tie-break.
        order = np.argsort(-scores, kind="stable")
        ranked = (ids[i] for i in order if not (q.kind == "listing" and ids[i] == q.query))
        out.append(result_of(q, ranked))
    return out


def _payload(x: DataListing) -> dict[str, Any]:
    category = x.labels.get("category", "")
    return {
        "listing_id": x.listing_id,
        "category": category,
        "category_path": category_prefixes(category) if category else [],
        "state": "active",
    }


async def rank_through_store(
    store: VectorStore, listings: Sequence[DataListing], vectors: Vectors
) -> list[QueryResult]:
    """Rankings from the store's own `search` (buyer photos) and `similar` (listings), each over
    the whole split so average precision sees every relevant listing."""
    for x in listings:
        rows = [vectors[k].tolist() for k in x.photos]
        await store.upsert_listing(ListingPoint(x.listing_id, rows, _payload(x)))
    total = await store.count()
    out = []
    for q in queries(listings):
        if q.kind == "buyer":
            hits = await store.search([vectors[q.query].tolist()], total)
        else:
            hits = await store.similar(q.query, total)
        out.append(result_of(q, (h.listing_id for h in hits)))
    return out


@dataclass(frozen=True)
class DataReport:
    """Every query's result on one split, and what the tables are computed from."""

    model_id: str
    split: str
    listings: int
    groups: int
    results: list[QueryResult]
    labels: Mapping[str, Mapping[str, str]]
    tasks: list[str]
    seconds: float = 0.0
    # Set by training: validation per epoch, shown as curves in the report.
    history: list[dict[str, Any]] = field(default_factory=list)

    def of(self, kind: Kind) -> list[QueryResult]:
        return [r for r in self.results if r.query.kind == kind]

    def scores(self, kind: Kind) -> RetrievalScores:
        rows = self.of(kind)
        n = len(rows)
        if n == 0:
            return RetrievalScores(0, {k: 0.0 for k in KS}, 0.0)
        recall = {k: sum(r.hit_at(k) for r in rows) / n for k in KS}
        return RetrievalScores(n, recall, sum(r.average_precision for r in rows) / n)

    def per_category(self, kind: Kind) -> dict[str, tuple[int, float]]:
        """Top-level category -> (queries, recall@10), most queries first."""
        by: dict[str, list[QueryResult]] = {}
        for r in self.of(kind):
            by.setdefault(r.query.top_level, []).append(r)
        rows = {c: (len(v), sum(r.hit_at(10) for r in v) / len(v)) for c, v in by.items()}
        return dict(sorted(rows.items(), key=lambda kv: (-kv[1][0], kv[0])))

    def agreement(self, kind: Kind) -> dict[str, float]:
        """Task -> mean share of a query's top 10 with the query listing's value (queries whose
        listing has no value for the task are left out)."""
        out: dict[str, float] = {}
        for task in self.tasks:
            shares = []
            for r in self.of(kind):
                want = self.labels[r.query.listing_id].get(task)
                if want is None or not r.top:
                    continue
                same = sum(self.labels[i].get(task) == want for i in r.top)
                shares.append(same / len(r.top))
            if shares:
                out[task] = sum(shares) / len(shares)
        return out

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model_id": self.model_id,
            "split": self.split,
            "listings": self.listings,
            "groups": self.groups,
        }
        for kind in KINDS:
            out[KIND_KEYS[kind]] = self.scores(kind).as_dict()
        out["agreement@10"] = {kind: self.agreement(kind) for kind in KINDS}
        out["per_category"] = {
            kind: {
                c: {"queries": n, "recall@10": r} for c, (n, r) in self.per_category(kind).items()
            }
            for kind in KINDS
        }
        out["seconds"] = round(self.seconds, 2)
        return out


def build_report(
    model_id: str,
    split: str,
    listings: Sequence[DataListing],
    results: list[QueryResult],
    tasks: Sequence[str],
    seconds: float = 0.0,
) -> DataReport:
    return DataReport(
        model_id=model_id,
        split=split,
        listings=len(listings),
        groups=len({x.group for x in listings}),
        results=results,
        labels={x.listing_id: x.labels for x in listings},
        tasks=list(tasks),
        seconds=seconds,
    )


async def evaluate_listings(
    model_id: str,
    split: str,
    listings: Sequence[DataListing],
    vectors: Vectors,
    tasks: Sequence[str],
    store_settings: StoreSettings | None = None,
) -> DataReport:
    """Index the listings into a scratch Qdrant Edge store (or the given one), query, score."""
    started = time.perf_counter()
    dim = int(next(iter(vectors.values())).shape[0])
    with tempfile.TemporaryDirectory(prefix="lookalike-eval-") as scratch:
        settings = store_settings or StoreSettings(
            index_path=Path(scratch), collection_alias="eval"
        )
        store = open_store(settings, model_id, dim)
        try:
            await store.ensure_collection()
            results = await rank_through_store(store, listings, vectors)
        finally:
            await store.close()
    seconds = time.perf_counter() - started
    return build_report(model_id, split, listings, results, tasks, seconds)
