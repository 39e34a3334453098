"""Results a shopper can trust: one score scale, a cut-off, currency-bound prices, the category
tree from the index, and pages that continue each other; the real model, store and app."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient

from models.store.types import SearchFilters, VectorStore
from query.settings import RELEVANCE_THRESHOLD
from tests.photos import rephotographed, side_by_side
from tests.query_support import (
    api_settings,
    app_client,
    catalog,
    catalog_store,
    catalog_vectors,
    error_of,
    image_upload,
    listing_ids,
)

pytestmark = pytest.mark.slow

Client = TestClient[Any, Any]


@pytest.fixture(params=["edge", "server"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[VectorStore]:
    async with catalog_store(request.param, tmp_path) as s:
        yield s


@pytest.fixture
async def client(store: VectorStore, tmp_path: Path) -> AsyncIterator[Client]:
    async with app_client(api_settings(tmp_path), store) as c:
        yield c


async def post(client: Client, path: str, data: bytes) -> dict[str, Any]:
    resp = await client.post(path, data=image_upload(data))
    body = await resp.json()
    assert resp.status == 200, body
    return body  # type: ignore[no-any-return]


async def get(client: Client, path: str) -> dict[str, Any]:
    resp = await client.get(path)
    body = await resp.json()
    assert resp.status == 200, body
    return body  # type: ignore[no-any-return]


def by_id() -> dict[str, dict[str, Any]]:
    return {c.listing_id: c.payload for c in catalog()}


async def test_search_and_similar_scores_are_cosines_on_one_scale(client: Client) -> None:
    searched = await post(client, "/v1/search?k=100", rephotographed("astronaut"))
    similar = await get(client, "/v1/listings/P-astronaut/similar?k=100")
    for body in (searched, similar):
        scores = [item["score"] for item in body["listings"]]
        assert scores and all(-1 <= s <= 1 for s in scores), scores
    # More like this by a two-photo listing: each photo's best cosine, averaged over the two,
    # not their sum (which reached 2 and read as a different scale).
    vectors = catalog_vectors()
    source = vectors["P-astronaut"]
    for item in similar["listings"]:
        expected = float((source @ vectors[item["id"]].T).max(axis=1).mean())
        assert item["score"] == pytest.approx(expected, abs=2e-3), item["id"]
    # The listing's own real photo searched again scores near 1, like its "similar" would.
    assert searched["listings"][0]["id"] == "P-astronaut"
    assert 0.8 < searched["listings"][0]["score"] <= 1


async def test_min_score_cuts_off_and_the_cut_off_is_served(client: Client) -> None:
    config = await get(client, "/v1/config")
    assert config["relevance_threshold"] == RELEVANCE_THRESHOLD
    assert (config["default_k"], config["max_k"]) == (24, 100)
    data = rephotographed("coffee")
    everything = await post(client, "/v1/search?k=100", data)
    cut = await post(client, f"/v1/search?k=100&min_score={RELEVANCE_THRESHOLD}", data)
    kept = [item for item in everything["listings"] if item["score"] >= RELEVANCE_THRESHOLD]
    assert listing_ids(cut) == [item["id"] for item in kept]
    assert "P-coffee" in listing_ids(cut)
    assert "P-motorcycle" in listing_ids(everything)
    assert "P-motorcycle" not in listing_ids(cut)
    assert cut["next"] is None
    similar = await get(client, "/v1/listings/G-lamp-4/similar?k=100&min_score=0.9")
    assert all(item["score"] >= 0.9 for item in similar["listings"])
    for bad in ("1.5", "-2", "nan", "high"):
        resp = await client.get(f"/v1/listings/G-lamp-4/similar?min_score={bad}")
        assert resp.status == 400
        assert error_of(await resp.json())[0] == "bad_parameter"


async def test_a_price_range_applies_in_one_currency(client: Client, store: VectorStore) -> None:
    payloads = by_id()
    data = rephotographed("coffee")
    eur = await post(client, "/v1/search?k=100&currency=eur", data)
    ids = listing_ids(eur)
    expected = {i for i, p in payloads.items() if p["currency"] == "EUR" and p["state"] == "active"}
    assert expected and set(ids) == expected
    ranged = await post(client, "/v1/search?k=100&currency=EUR&price_max=30", data)
    assert {i for i in listing_ids(ranged)} == {i for i in expected if payloads[i]["price"] <= 30}
    usd = await get(client, "/v1/listings/P-coffee/similar?k=100&currency=USD&price_max=30")
    assert usd["listings"]
    assert all(item["price"]["currency"] == "USD" for item in usd["listings"])
    assert all(float(item["price"]["amount"]) <= 30 for item in usd["listings"])
    # A number alone says nothing: 30 of what?
    resp = await client.get("/v1/listings/P-coffee/similar?price_max=30")
    assert resp.status == 400
    assert error_of(await resp.json())[0] == "currency_required"
    resp = await client.get("/v1/listings/P-coffee/similar?currency=euro")
    assert resp.status == 400
    assert await store.count(SearchFilters(currency="EUR")) == len(expected)


def walk(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [n for node in nodes for n in (node, *walk(node["children"]))]


async def test_categories_are_the_index_counts_as_a_tree(
    client: Client, store: VectorStore
) -> None:
    body = await get(client, "/v1/categories")
    assert body["total"] == await store.count(SearchFilters())
    nodes = walk(body["categories"])
    live = [p for p in by_id().values() if p["state"] == "active"]
    expected_paths = {prefix for p in live for prefix in p["category_path"]}
    assert {n["path"] for n in nodes} == expected_paths
    for node in nodes:
        assert node["count"] == await store.count(SearchFilters(category_prefix=node["path"]))
        assert node["name"] == node["path"].rsplit("/", 1)[-1]
        for child in node["children"]:
            assert child["path"].startswith(node["path"] + "/")
    top = [n["path"] for n in body["categories"]]
    assert sum(n["count"] for n in body["categories"]) == body["total"]
    assert top[0] == "home_and_living" and "/" not in "".join(top)
    resp = await client.get("/v1/categories?depth=2")
    assert resp.status == 400
    assert error_of(await resp.json())[0] == "unknown_parameter"


async def test_page_two_continues_page_one_without_overlap(client: Client) -> None:
    data = rephotographed("hubble")
    whole = listing_ids(await post(client, "/v1/search?k=30", data))
    first = await post(client, "/v1/search?k=15", data)
    assert first["offset"] == 0 and first["next"] is not None
    assert "offset=15" in first["next"] and "k=15" in first["next"]
    second = await post(client, first["next"], data)
    assert second["offset"] == 15
    assert not set(listing_ids(first)) & set(listing_ids(second))
    assert listing_ids(first) + listing_ids(second) == whole
    # Stable: the same page again is the same page.
    assert listing_ids(await post(client, first["next"], data)) == listing_ids(second)
    # More like this pages the same way, and the last page says so.
    similar = await get(client, "/v1/listings/G-vase-1/similar?k=20&category=home_and_living")
    assert similar["next"] is not None
    rest = await get(client, similar["next"])
    assert not set(listing_ids(similar)) & set(listing_ids(rest))
    assert rest["next"] is None and len(rest["listings"]) < 20
    total = sum(
        1
        for p in by_id().values()
        if p["category"].startswith("home_and_living/") and p["state"] == "active"
    )
    assert len(listing_ids(similar)) + len(listing_ids(rest)) == total - 1
    assert np.all(np.diff([i["score"] for i in similar["listings"] + rest["listings"]]) <= 1e-6)


async def test_a_crop_searches_that_region_of_the_photo(client: Client) -> None:
    data = side_by_side("chelsea", "rocket")
    whole = await post(client, "/v1/search?k=100", data)
    left = await post(client, "/v1/search?k=5&crop=0,0,0.5,1", data)
    right = await post(client, "/v1/search?k=5&crop=0.5,0,0.5,1", data)
    assert listing_ids(left)[0] == "P-chelsea"
    assert listing_ids(right)[0] == "P-rocket"
    # The whole photo, both things at once, is worse for at least one of them.
    rank = listing_ids(whole).index
    score = {item["id"]: item["score"] for item in whole["listings"]}
    worse = [
        rank(lid) > 0 or score[lid] < region["listings"][0]["score"] - 0.02
        for lid, region in (("P-chelsea", left), ("P-rocket", right))
    ]
    assert any(worse), (listing_ids(whole)[:3], score["P-chelsea"], score["P-rocket"])
    for bad, code in [
        ("0,0,0.5", "bad_parameter"),
        ("0,0,half,1", "bad_parameter"),
        ("0.6,0,0.5,1", "bad_parameter"),
        ("-0.1,0,0.5,1", "bad_parameter"),
        ("0,0,0.01,1", "bad_parameter"),
        ("0,0,0.06,0.06", "crop_too_small"),
    ]:
        resp = await client.post(f"/v1/search?crop={bad}", data=image_upload(data))
        assert resp.status == 400, bad
        assert error_of(await resp.json())[0] == code, bad
    # In a JSON body, crop is a field: [x, y, w, h]; in the query and the body at once, refused.
    encoded = base64.b64encode(data).decode()
    resp = await client.post(
        "/v1/search?k=5", json={"image_base64": encoded, "crop": [0.5, 0, 0.5, 1]}
    )
    assert listing_ids(await resp.json())[0] == "P-rocket"
    refused: list[tuple[dict[str, Any], str]] = [
        ({"crop": [0.5, 0, 0.5]}, ""),
        ({"crop": "0.5,0,0.5,1"}, ""),
        ({"crop": [True, 0, 0.5, 1]}, ""),
        ({"crop": [0.6, 0, 0.5, 1]}, ""),
        ({"crop": [0.5, 0, 0.5, 1]}, "?crop=0,0,0.5,1"),
    ]
    for doc, query in refused:
        resp = await client.post(f"/v1/search{query}", json={"image_base64": encoded, **doc})
        assert resp.status == 400, doc
        assert error_of(await resp.json())[0] == "bad_parameter", doc
    resp = await client.get("/v1/listings/P-coffee/similar?crop=0,0,0.5,1")
    assert resp.status == 400
    assert error_of(await resp.json())[0] == "unknown_parameter"
