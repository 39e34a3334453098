"""The service on its own: resources built from settings in cleanup_ctx, and `python -m query`."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp
import pytest

from query.keys import EMBEDDER, STORE
from tests.photos import rephotographed
from tests.query_support import (
    api_settings,
    app_client,
    fill_store,
    image_upload,
    listing_ids,
    start_service,
)

pytestmark = pytest.mark.slow


async def test_the_app_opens_and_closes_its_own_model_store_and_fetcher(tmp_path: Path) -> None:
    settings = api_settings(tmp_path)
    async with app_client(settings, own_model=True) as client:
        resp = await client.get("/readyz")
        ready = await resp.json()
        assert resp.status == 200, ready
        assert ready["collection"].startswith("listings__")

        resp = await client.post("/v1/search", data=image_upload(rephotographed("flower")))
        assert resp.status == 200
        assert (await resp.json())["listings"] == []

        # The worker's write path, into the store the app opened itself: now it finds it.
        await fill_store(client.app[STORE], client.app[EMBEDDER].model_id)
        resp = await client.post("/v1/search?k=3", data=image_upload(rephotographed("flower")))
        assert "P-flower" in listing_ids(await resp.json())
    # The app closed its Edge store: the same index opens again, with the data in it.
    async with app_client(settings) as again:
        resp = await again.get("/v1/listings/P-flower")
        assert resp.status == 200


async def test_python_dash_m_query_serves_until_sigterm(tmp_path: Path) -> None:
    proc, base = await start_service(tmp_path / "index", {"LOOKALIKE_DEVICE": "cpu"})
    try:
        assert base.startswith("http://127.0.0.1:"), base
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/readyz") as resp:
                assert resp.status == 200
                assert (await resp.json())["status"] == "ready"
            async with session.get(f"{base}/openapi.json") as resp:
                assert "/v1/search" in (await resp.json())["paths"]
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), timeout=30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
