"""Search by photo end to end: the real model, a real store, the real app on a loopback server."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from models.store.types import VectorStore
from tests.imageserver import ImageServer
from tests.photos import PHOTO_FILES, photo_bytes, rephotographed
from tests.query_support import (
    api_settings,
    app_client,
    catalog,
    catalog_store,
    error_of,
    fetch_settings,
    image_upload,
    listing_ids,
    metric_value,
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


async def search(client: Client, data: bytes, query: str = "") -> dict[str, Any]:
    resp = await client.post(f"/v1/search{query}", data=image_upload(data))
    body = await resp.json()
    assert resp.status == 200, body
    return body  # type: ignore[no-any-return]


async def test_a_listing_photographed_again_finds_that_listing_in_the_top_3(
    client: Client,
) -> None:
    for name in sorted(PHOTO_FILES):
        body = await search(client, rephotographed(name), "?k=3")
        assert f"P-{name}" in listing_ids(body), (name, listing_ids(body))


async def test_results_carry_listing_fields_score_matched_photo_and_model(
    client: Client,
) -> None:
    body = await search(client, rephotographed("coffee", angle=-3, crop=0.1))
    assert 0 <= body["took_ms"] < 60_000
    top = body["listings"][0]
    stored = next(c.payload for c in catalog() if c.listing_id == "P-coffee")
    assert top["id"] == "P-coffee"
    assert top["title"] == stored["title"]
    assert top["category"] == stored["category"]
    assert top["price"] == {"amount": stored["price_amount"], "currency": stored["currency"]}
    assert top["shop_id"] == stored["shop_id"]
    # The real photo is the listing's second image: the matched URL must be that one.
    assert top["image_url"] == "https://img.example/P-coffee/1.jpg"
    scores = [item["score"] for item in body["listings"]]
    assert scores == sorted(scores, reverse=True)
    assert len(body["listings"]) == 24
    readyz = await (await client.get("/readyz")).json()
    assert body["model_id"] == readyz["model_id"]


async def test_k_limits_the_number_of_results(client: Client) -> None:
    body = await search(client, rephotographed("rocket"), "?k=5")
    assert len(body["listings"]) == 5


async def test_an_inactive_listing_is_never_a_result(client: Client) -> None:
    body = await search(client, rephotographed("rocket"), "?k=100")
    sold = [c.listing_id for c in catalog() if c.payload["state"] != "active"]
    assert sold and not set(sold) & set(listing_ids(body))
    assert len(body["listings"]) == len(catalog()) - len(sold)


async def test_filters_narrow_the_results(client: Client) -> None:
    by_id = {c.listing_id: c.payload for c in catalog()}
    data = rephotographed("hubble")

    body = await search(client, data, "?k=100&category=art/prints")
    ids = listing_ids(body)
    assert ids and all(by_id[i]["category"].startswith("art/prints/") for i in ids)
    assert "P-hubble" in ids
    assert len(ids) == sum(
        1
        for p in by_id.values()
        if p["category"].startswith("art/prints/") and p["state"] == "active"
    )

    body = await search(
        client, data, "?k=100&category=art/prints/space&currency=USD&price_min=40&price_max=80"
    )
    ids = listing_ids(body)
    assert ids
    for i in ids:
        assert by_id[i]["category"] == "art/prints/space"
        assert 40 <= by_id[i]["price"] <= 80

    body = await search(client, data, "?k=100&shop_id=S1")
    ids = listing_ids(body)
    assert ids and all(by_id[i]["shop_id"] == "S1" for i in ids)

    body = await search(client, data, "?k=10&exclude=P-hubble,G-ring-27&exclude=G-ring-9")
    assert not {"P-hubble", "G-ring-27", "G-ring-9"} & set(listing_ids(body))

    body = await search(client, data, "?category=no/such/category")
    assert body["listings"] == []


async def test_json_base64_and_image_url_find_the_same_listing(
    client: Client, image_server: ImageServer, tmp_path: Path, store: VectorStore
) -> None:
    data = rephotographed("china")
    resp = await client.post(
        "/v1/search?k=3", json={"image_base64": base64.b64encode(data).decode()}
    )
    assert resp.status == 200
    assert "P-china" in listing_ids(await resp.json())

    url = image_server.add("shopper/china.jpg", data)
    settings = api_settings(tmp_path, fetch=fetch_settings(allow_private=True))
    async with app_client(settings, store) as allowed:
        resp = await allowed.post("/v1/search?k=3", json={"image_url": url})
        body = await resp.json()
        assert resp.status == 200, body
        assert "P-china" in listing_ids(body)
    assert image_server.count("shopper/china.jpg") == 1


async def test_png_and_original_file_bytes_are_accepted(client: Client) -> None:
    body = await search(client, photo_bytes("chelsea"), "?k=1")
    assert listing_ids(body) == ["P-chelsea"]


async def test_similar_excludes_the_listing_itself(client: Client) -> None:
    resp = await client.get("/v1/listings/P-astronaut/similar?k=10")
    body = await resp.json()
    assert resp.status == 200, body
    ids = listing_ids(body)
    assert len(ids) == 10
    assert "P-astronaut" not in ids
    scores = [item["score"] for item in body["listings"]]
    assert scores == sorted(scores, reverse=True)

    resp = await client.get("/v1/listings/P-astronaut/similar?k=100&category=art")
    ids = listing_ids(await resp.json())
    assert ids and "P-astronaut" not in ids
    by_id = {c.listing_id: c.payload for c in catalog()}
    assert all(by_id[i]["category"].startswith("art/") for i in ids)


async def test_a_synthetic_product_is_most_similar_to_its_own_kind(client: Client) -> None:
    resp = await client.get("/v1/listings/G-lamp-4/similar?k=3")
    ids = listing_ids(await resp.json())
    assert sum(1 for i in ids if i.startswith("G-lamp-")) >= 2, ids


async def test_get_listing_and_missing_listings(client: Client) -> None:
    resp = await client.get("/v1/listings/P-flower")
    body = await resp.json()
    assert resp.status == 200
    assert body["id"] == "P-flower"
    assert body["state"] == "active"
    assert body["image_urls"] == [
        "https://img.example/P-flower/0.jpg",
        "https://img.example/P-flower/1.jpg",
    ]
    assert body["version"] == 1

    for path in ("/v1/listings/nope", "/v1/listings/nope/similar"):
        resp = await client.get(path)
        assert resp.status == 404
        code, _ = error_of(await resp.json())
        assert code == "listing_not_found"


async def test_health_readiness_and_metrics(client: Client, store: VectorStore) -> None:
    resp = await client.get("/healthz")
    assert resp.status == 200 and (await resp.json()) == {"status": "ok"}
    resp = await client.get("/readyz")
    body = await resp.json()
    assert resp.status == 200, body
    assert body["status"] == "ready"
    assert body["dim"] == await store.vector_size()
    assert body["collection"] == store.collection_name
    await search(client, rephotographed("coffee"))
    resp = await client.get("/metrics")
    assert resp.status == 200 and resp.content_type == "text/plain"
    text = await resp.text()
    requests = {"route": "/v1/search", "method": "POST", "status": "200"}
    assert metric_value(text, "lookalike_http_request_duration_seconds_count", requests) == 1
    store_ok = {"operation": "search", "outcome": "ok"}
    assert metric_value(text, "lookalike_store_duration_seconds_count", store_ok) == 1
    assert metric_value(text, "lookalike_embed_batch_size_count") == 1
