"""Micro-batching with the real model: concurrent searches share forward passes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.photos import PHOTO_FILES, rephotographed
from tests.query_support import (
    api_settings,
    app_client,
    catalog_store,
    image_upload,
    listing_ids,
    metric_value,
)

pytestmark = pytest.mark.slow


async def test_concurrent_searches_are_served_in_fewer_forward_passes(tmp_path: Path) -> None:
    names = sorted(PHOTO_FILES)[:8]
    photos = {name: rephotographed(name, angle=-2.5) for name in names}
    async with (
        catalog_store("edge", tmp_path) as store,
        app_client(api_settings(tmp_path, batch_max_size=16), store) as client,
    ):

        async def one(name: str) -> list[str]:
            resp = await client.post("/v1/search?k=3", data=image_upload(photos[name]))
            assert resp.status == 200
            return listing_ids(await resp.json())

        results = await asyncio.gather(*(one(name) for name in names))
        text = await (await client.get("/metrics")).text()

    # Batching must not mix results up: every request still finds its own listing.
    for name, ids in zip(names, results, strict=True):
        assert f"P-{name}" in ids, (name, ids)
    passes = metric_value(text, "lookalike_embed_batch_size_count")
    photos_embedded = metric_value(text, "lookalike_embed_batch_size_sum")
    assert photos_embedded == len(names)
    assert passes is not None and passes < len(names), f"{passes} passes for {len(names)} requests"
    # Fewer passes than photos means at least one pass embedded several photos together.
