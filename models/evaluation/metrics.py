"""Ranking metrics: recall@k (hit rate), average precision, and attribute agreement of a top-k."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

KS: tuple[int, ...] = (1, 5, 10)


@dataclass(frozen=True)
class RetrievalScores:
    """Means over queries. recall@k is the metric-learning hit rate: the share of queries with at
    least one relevant listing in their top k (the shopper needs one right listing, not all)."""

    queries: int
    recall: Mapping[int, float]
    mean_average_precision: float

    def as_dict(self) -> dict[str, float | int]:
        out: dict[str, float | int] = {f"recall@{k}": v for k, v in sorted(self.recall.items())}
        out["map"] = self.mean_average_precision
        out["queries"] = self.queries
        return out


def average_precision(ranked: Sequence[str], relevant: Collection[str]) -> float:
    """AP of one ranking: the mean, over every relevant id, of the precision at its rank; a
    relevant id missing from the ranking contributes 0."""
    if not relevant:
        raise ValueError("a query needs at least one relevant id")
    found = 0
    total = 0.0
    for rank, listing_id in enumerate(ranked, start=1):
        if listing_id in relevant:
            found += 1
            total += found / rank
    return total / len(relevant)


def hit_at(ranked: Sequence[str], relevant: Collection[str], k: int) -> bool:
    return any(listing_id in relevant for listing_id in ranked[:k])


def retrieval_scores(
    rankings: Sequence[Sequence[str]],
    relevant: Sequence[Collection[str]],
    ks: Sequence[int] = KS,
) -> RetrievalScores:
    """Scores of many queries: `rankings[i]` is query i's ranked ids, `relevant[i]` its answers."""
    if len(rankings) != len(relevant):
        raise ValueError(f"{len(rankings)} rankings for {len(relevant)} relevant sets")
    n = len(rankings)
    if n == 0:
        return RetrievalScores(0, {k: 0.0 for k in ks}, 0.0)
    recall = {
        k: sum(hit_at(r, rel, k) for r, rel in zip(rankings, relevant, strict=True)) / n for k in ks
    }
    ap = sum(average_precision(r, rel) for r, rel in zip(rankings, relevant, strict=True)) / n
    return RetrievalScores(n, recall, ap)


def attribute_agreement(
    rankings: Sequence[Sequence[str]],
    query_attributes: Sequence[Mapping[str, str]],
    listing_attributes: Mapping[str, Mapping[str, str]],
    k: int = 10,
) -> dict[str, float]:
    """Per attribute, the mean share of each query's top k that has the query's value (how often
    the results at least look like the right kind of thing, even when the item is missed)."""
    names = sorted({name for attrs in query_attributes for name in attrs})
    out: dict[str, float] = {}
    for name in names:
        shares = []
        for ranked, attrs in zip(rankings, query_attributes, strict=True):
            top = ranked[:k]
            if top:
                same = sum(listing_attributes[i].get(name) == attrs[name] for i in top)
                shares.append(same / len(top))
        out[name] = sum(shares) / len(shares) if shares else 0.0
    return out
