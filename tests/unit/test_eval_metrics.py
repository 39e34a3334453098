"""Ranking metrics computed by hand on small rankings."""

from __future__ import annotations

import pytest

from models.evaluation.metrics import (
    attribute_agreement,
    average_precision,
    retrieval_scores,
)


def test_average_precision_is_the_mean_precision_at_each_relevant_rank() -> None:
    # Relevant at ranks 1 and 3: (1/1 + 2/3) / 2.
    assert average_precision(["a", "x", "b", "y"], {"a", "b"}) == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision(["x", "a"], {"a"}) == pytest.approx(0.5)


def test_a_relevant_listing_missing_from_the_ranking_counts_as_zero() -> None:
    assert average_precision(["a", "x"], {"a", "b"}) == pytest.approx(0.5)
    assert average_precision(["x", "y"], {"a"}) == 0.0


def test_a_query_without_relevant_listings_is_refused() -> None:
    with pytest.raises(ValueError, match="relevant"):
        average_precision(["a"], set())


def test_recall_at_k_is_the_share_of_queries_with_a_hit_in_the_top_k() -> None:
    rankings = [["a", "x", "y"], ["x", "y", "b"], ["x", "y", "z"]]
    relevant = [{"a"}, {"b", "c"}, {"c"}]
    scores = retrieval_scores(rankings, relevant, ks=(1, 3))
    assert scores.queries == 3
    assert scores.recall == {1: pytest.approx(1 / 3), 3: pytest.approx(2 / 3)}
    # AP: 1, (1/3)/2, 0.
    assert scores.mean_average_precision == pytest.approx((1 + 1 / 6 + 0) / 3)
    assert scores.as_dict()["recall@3"] == pytest.approx(2 / 3)
    assert scores.as_dict()["map"] == pytest.approx(7 / 18)


def test_rankings_and_answers_must_pair_up() -> None:
    with pytest.raises(ValueError, match="rankings"):
        retrieval_scores([["a"]], [{"a"}, {"b"}])


def test_attribute_agreement_is_the_share_of_the_top_k_with_the_query_value() -> None:
    listings = {
        "l1": {"colour": "red", "category": "mug"},
        "l2": {"colour": "blue", "category": "mug"},
        "l3": {"colour": "red", "category": "vase"},
    }
    rankings = [["l1", "l2", "l3"], ["l2", "l3", "l1"]]
    queries = [{"colour": "red", "category": "mug"}, {"colour": "blue", "category": "vase"}]
    agreement = attribute_agreement(rankings, queries, listings, k=2)
    # Query 1 top-2: l1 (red mug), l2 (blue mug): colour 1/2, category 2/2.
    # Query 2 top-2: l2 (blue mug), l3 (red vase): colour 1/2, category 1/2.
    assert agreement == {"category": pytest.approx(0.75), "colour": pytest.approx(0.5)}
