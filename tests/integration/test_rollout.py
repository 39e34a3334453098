"""A model rollout with no downtime: searches never fail while reindex builds and swaps in a model,
nor while `alias set` rolls it back.

Both backends: the server path (qdrant-client's local mode, `":memory:"`, shared in-process the
way a Qdrant server is shared) and Edge, where the query service holds the old collection's
shard open (Edge locks it), so reindex reads its source from a copy of the shard's files.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from itertools import cycle
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import torch

from lookalike.alias import set_alias
from lookalike.reindex import reindex
from models.network import EmbeddingNet, export_checkpoint, load_model
from models.settings import ImageSettings, ModelSettings, StoreSettings
from models.store.factory import collection_name_for, open_store, resolve_alias
from models.store.types import ListingPoint, VectorStore, category_prefixes
from query.app import create_app
from query.serve import start_site
from query.settings import ApiSettings
from tests.imageserver import ImageServer
from tests.photos import PHOTO_FILES, photo, photo_bytes, rephotographed
from tests.query_support import PHOTO_CATEGORIES, embedder, fetch_settings

pytestmark = pytest.mark.slow

NAMES = sorted(PHOTO_FILES)
# A photo host answers in tens to hundreds of milliseconds; the delay makes the reindex last long
# enough (a couple of seconds for this catalog) that many searches overlap it.
PHOTO_DELAY_S = 0.25
SEARCHERS = 2
PAUSE_S = 0.02
BEFORE_S = 1.0
AFTER_S = 1.0
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=20)


@dataclass(frozen=True)
class Attempt:
    """One search as a shopper saw it, with where the alias pointed just before and after."""

    name: str
    started: float
    ended: float
    alias_before: str | None
    alias_after: str | None
    status: int | None
    top: str | None
    model_id: str | None
    error: str | None


def _projected_checkpoint(path: Path) -> str:
    """A fine-tuned-looking model: the ImageNet backbone plus a random 128-d projection."""
    base = load_model("efficientnet-lite0")
    torch.manual_seed(0)
    net = EmbeddingNet("efficientnet-lite0", base.backbone, "efficientnet-lite0-tmp", 128)
    return export_checkpoint(net, path)


def _payload(listing_id: str, name: str, url: str, model_id: str) -> dict[str, Any]:
    category = PHOTO_CATEGORIES[name]
    return {
        "listing_id": listing_id,
        "title": f"{name} print",
        "category": category,
        "category_path": category_prefixes(category),
        "price": 10.0,
        "price_amount": "10.00",
        "currency": "USD",
        "shop_id": "S1",
        "state": "active",
        "image_urls": [url],
        "image_hashes": [listing_id],
        "source_image_urls": [url],
        "version": 1,
        "model_id": model_id,
    }


async def _index_catalog(store: VectorStore, image_server: ImageServer, model_id: str) -> None:
    """Every bundled photo as a listing L-<name>, embedded by the ImageNet model."""
    model = embedder()
    for name in NAMES:
        url = image_server.add(f"/{name}.jpg", photo_bytes(name), delay_s=PHOTO_DELAY_S)
        vectors = (await asyncio.to_thread(model.embed, [photo(name)])).tolist()
        await store.upsert_listing(
            ListingPoint(f"L-{name}", vectors, _payload(f"L-{name}", name, url, model_id))
        )


def _api_settings(store: StoreSettings, model: ModelSettings) -> ApiSettings:
    return ApiSettings(
        port=0, embedding=model, images=ImageSettings(), fetch=fetch_settings(), store=store
    )


@asynccontextmanager
async def _serving(settings: ApiSettings) -> AsyncIterator[str]:
    """The query service as `lookalike api` runs it (its own model and store), on a free port."""
    runner, url = await start_site(create_app(settings), "127.0.0.1", 0)
    try:
        yield url
    finally:
        await runner.cleanup()


async def _search(
    session: aiohttp.ClientSession, base: str, data: bytes
) -> tuple[int, dict[str, Any]]:
    form = aiohttp.FormData()
    form.add_field("image", data, filename="photo.jpg", content_type="image/jpeg")
    async with session.post(f"{base}/v1/search?k=3", data=form, timeout=REQUEST_TIMEOUT) as resp:
        return resp.status, await resp.json()


async def _search_continuously(
    session: aiohttp.ClientSession,
    base: str,
    store: StoreSettings,
    queries: Sequence[tuple[str, bytes]],
    stop: asyncio.Event,
    attempts: list[Attempt],
) -> None:
    """Search without pause until told to stop, recording every outcome, failures included."""
    for name, data in cycle(queries):
        if stop.is_set():
            return
        before = await resolve_alias(store)
        started = time.perf_counter()
        status = top = model_id = error = None
        try:
            status, body = await _search(session, base, data)
            if status == 200:
                top = body["listings"][0]["id"] if body["listings"] else None
                model_id = body["model_id"]
            else:
                error = json.dumps(body)[:300]
        except Exception as exc:  # a failed request is what this test looks for: record it
            error = repr(exc)
        ended = time.perf_counter()
        after = await resolve_alias(store)
        attempts.append(Attempt(name, started, ended, before, after, status, top, model_id, error))
        await asyncio.sleep(PAUSE_S)


@pytest.mark.parametrize("backend", ["server", "edge"])
async def test_searches_never_fail_while_a_new_model_is_rolled_out(
    image_server: ImageServer, tmp_path: Path, backend: str
) -> None:
    if backend == "server":
        store_settings = StoreSettings(qdrant_url=":memory:")
    else:
        store_settings = StoreSettings(index_path=tmp_path / "index")
    old = embedder()
    queries = [(name, rephotographed(name)) for name in NAMES]
    # On the server path it is held for the whole test: the in-process "server" lives as long as
    # one store uses it. Edge allows one handle per shard, and the old service needs it.
    catalog = open_store(store_settings, old.model_id, old.dim)
    await catalog.ensure_collection()
    try:
        await _index_catalog(catalog, image_server, old.model_id)
        old_name = catalog.collection_name
        if backend == "edge":
            await catalog.close()
        assert await resolve_alias(store_settings) == old_name

        checkpoint = tmp_path / "projected.pt"
        new_id = await asyncio.to_thread(_projected_checkpoint, checkpoint)
        new_name = collection_name_for(store_settings.collection_alias, new_id)
        new_model = ModelSettings(device="cpu", embed_batch_size=4, model_checkpoint=checkpoint)

        attempts: list[Attempt] = []
        stop = asyncio.Event()
        old_api = _api_settings(store_settings, ModelSettings(device="cpu"))
        async with _serving(old_api) as base, aiohttp.ClientSession() as session:
            searchers = [
                asyncio.create_task(
                    _search_continuously(
                        session, base, store_settings, queries[i:] + queries[:i], stop, attempts
                    )
                )
                for i in range(SEARCHERS)
            ]
            try:
                await asyncio.sleep(BEFORE_S)
                reindex_started = time.perf_counter()
                result = await reindex(
                    store_settings,
                    new_model,
                    fetch_settings(allow_private=True),
                    ImageSettings(),
                    progress=False,
                )
                reindex_ended = time.perf_counter()
                rolled_out_to = await resolve_alias(store_settings)
                await asyncio.sleep(AFTER_S)
                # Rolling back is `lookalike alias set <old collection>`, searches still going on.
                rollback = await set_alias(store_settings, old_name)
                rolled_back = time.perf_counter()
                await asyncio.sleep(AFTER_S / 2)
            finally:
                stop.set()
                await asyncio.gather(*searchers)

        assert (result.source, result.target) == (old_name, new_name)
        assert (result.listings, result.images, result.failed) == (len(NAMES), len(NAMES), [])
        assert result.swapped
        assert rolled_out_to == new_name
        assert (rollback.previous, rollback.target, rollback.moved) == (new_name, old_name, True)
        assert {c.name: c.points for c in rollback.collections} == {
            old_name: len(NAMES),
            new_name: len(NAMES),
        }
        assert await resolve_alias(store_settings) == old_name
        after_rollback = [a for a in attempts if a.started > rolled_back]
        assert after_rollback and all(a.alias_before == old_name for a in after_rollback)

        failed = [a for a in attempts if a.status != 200 or a.error is not None]
        assert not failed, failed[:5]
        wrong = [a for a in attempts if a.top != f"L-{a.name}" or a.model_id != old.model_id]
        assert not wrong, wrong[:5]
        during = [a for a in attempts if reindex_started <= a.started and a.ended <= reindex_ended]
        assert len(during) >= 20, (len(during), reindex_ended - reindex_started)
        assert any(a.ended < reindex_started for a in attempts)
        # The alias was observed on both sides of its move while searches kept being answered.
        assert any(a.alias_after == old_name for a in during)
        swapped = [a for a in attempts if a.alias_before == new_name]
        assert len(swapped) >= 5, len(swapped)
        took = reindex_ended - reindex_started
        print(f"{len(attempts)} searches, {len(during)} during a {took:.1f} s reindex, none failed")

        # Rolled forward again, the next release of the service runs the new model and reads the
        # new collection.
        assert (await set_alias(store_settings, new_id)).target == new_name
        new_api = _api_settings(store_settings, new_model)
        async with _serving(new_api) as base, aiohttp.ClientSession() as session:
            for name, data in queries:
                status, body = await _search(session, base, data)
                assert status == 200, body
                assert body["model_id"] == new_id
                assert body["listings"][0]["id"] == f"L-{name}", (name, body["listings"])
        # The old collection is kept as it was: rolling back is moving the alias back.
        if backend == "edge":
            catalog = open_store(store_settings, old.model_id, old.dim)
            await catalog.ensure_collection()
        assert await catalog.count() == len(NAMES)
        if backend == "edge":
            leftovers = [p.name for p in store_settings.index_path.iterdir()]
            assert not [n for n in leftovers if n.startswith(".reindex-")], leftovers
    finally:
        await catalog.close()
