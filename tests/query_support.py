"""A small real catalog for the query tests (real photos and generated product shots, embedded by
the real model, written to a real store) and helpers to run the app on a test server."""

from __future__ import annotations

import asyncio
import io
import json
import os
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image, ImageDraw, ImageFilter
from prometheus_client.parser import text_string_to_metric_families

from models.embedder import AsyncEmbedder, Embedder
from models.fetch import ImageFetcher
from models.settings import FetchSettings, ImageSettings, ModelSettings, StoreSettings
from models.store.factory import open_store
from models.store.types import ListingPoint, VectorStore, category_prefixes
from query.app import create_app
from query.serve import MAX_HEADER_FIELD, MAX_REQUEST_LINE
from query.settings import ApiSettings
from tests.photos import PHOTO_FILES, photo

# Every real photo is a listing of its own; the category says what a shopper would file it under.
PHOTO_CATEGORIES: dict[str, str] = {
    "chelsea": "art/prints/animals",
    "coffee": "home_and_living/kitchen/mugs",
    "astronaut": "art/prints/space",
    "rocket": "art/prints/space",
    "motorcycle": "vehicles/motorcycles",
    "retina": "art/prints/science",
    "hubble": "art/prints/space",
    "china": "art/prints/landscapes",
    "flower": "home_and_living/garden/flowers",
}
SHAPES = ("mug", "vase", "box", "ring", "lamp", "bottle")
SYNTHETIC_CATEGORIES = {
    "mug": "home_and_living/kitchen/mugs",
    "vase": "home_and_living/decor/vases",
    "box": "home_and_living/storage/boxes",
    "ring": "jewelry/rings",
    "lamp": "home_and_living/lighting/lamps",
    "bottle": "home_and_living/kitchen/bottles",
}
N_SYNTHETIC = 30


@dataclass(frozen=True)
class CatalogListing:
    """One listing of the test catalog with its images (decoded) and payload."""

    listing_id: str
    images: tuple[Image.Image, ...]
    payload: dict[str, Any]


def product_shot(shape: str, seed: int) -> Image.Image:
    """A generated product photo: one object of a colour on a light, slightly textured backdrop."""
    rng = np.random.default_rng(seed)
    w, h = 320, 320
    back = rng.integers(200, 250, size=3)
    noise = rng.normal(0, 6, size=(h, w, 3))
    base = np.clip(back + noise, 0, 255).astype(np.uint8)
    img = Image.fromarray(base, "RGB")
    draw = ImageDraw.Draw(img)
    colour = tuple(int(c) for c in rng.integers(0, 200, size=3))
    dx, dy = (int(v) for v in rng.integers(-30, 30, size=2))
    cx, cy = w // 2 + dx, h // 2 + dy
    if shape == "mug":
        draw.rectangle((cx - 60, cy - 70, cx + 50, cy + 70), fill=colour)
        draw.ellipse((cx + 30, cy - 40, cx + 95, cy + 40), outline=colour, width=14)
    elif shape == "vase":
        draw.ellipse((cx - 70, cy - 20, cx + 70, cy + 110), fill=colour)
        draw.rectangle((cx - 25, cy - 110, cx + 25, cy), fill=colour)
    elif shape == "box":
        draw.polygon(
            [(cx - 90, cy - 30), (cx, cy - 80), (cx + 90, cy - 30), (cx, cy + 20)], fill=colour
        )
        darker = tuple(max(0, c - 60) for c in colour)
        draw.polygon(
            [(cx - 90, cy - 30), (cx, cy + 20), (cx, cy + 110), (cx - 90, cy + 60)], fill=darker
        )
        draw.polygon(
            [(cx + 90, cy - 30), (cx, cy + 20), (cx, cy + 110), (cx + 90, cy + 60)], fill=colour
        )
    elif shape == "ring":
        draw.ellipse((cx - 80, cy - 80, cx + 80, cy + 80), outline=colour, width=22)
        draw.ellipse((cx - 15, cy - 105, cx + 15, cy - 75), fill=(240, 240, 255))
    elif shape == "lamp":
        draw.polygon(
            [(cx - 80, cy - 20), (cx - 40, cy - 110), (cx + 40, cy - 110), (cx + 80, cy - 20)],
            fill=colour,
        )
        draw.rectangle((cx - 8, cy - 20, cx + 8, cy + 90), fill=(60, 60, 60))
        draw.rectangle((cx - 50, cy + 90, cx + 50, cy + 105), fill=(60, 60, 60))
    else:
        draw.rectangle((cx - 35, cy - 40, cx + 35, cy + 110), fill=colour)
        draw.rectangle((cx - 14, cy - 100, cx + 14, cy - 40), fill=colour)
    return img.filter(ImageFilter.GaussianBlur(1.2))


def _payload(
    listing_id: str,
    title: str,
    category: str,
    price: float,
    shop_id: str,
    n_images: int,
    state: str = "active",
    currency: str = "USD",
) -> dict[str, Any]:
    urls = [f"https://img.example/{listing_id}/{i}.jpg" for i in range(n_images)]
    now = datetime.now(UTC).isoformat()
    return {
        "listing_id": listing_id,
        "title": title,
        "category": category,
        "category_path": category_prefixes(category),
        "price": price,
        "price_amount": f"{price:.2f}",
        "currency": currency,
        "shop_id": shop_id,
        "state": state,
        "image_urls": urls,
        "image_hashes": [f"{listing_id}-{i}" for i in range(n_images)],
        "source_image_urls": urls,
        "version": 1,
        "model_id": "",
        "occurred_at": now,
        "indexed_at": now,
    }


@cache
def catalog() -> tuple[CatalogListing, ...]:
    """The test catalog. Photo listings P-<name> carry a generated shot first and the real photo
    second, so the matched image is not simply image 0. Prices: photos 10..90 USD, synthetic
    5..150, in EUR for every fifth (G-*-2, G-*-7, ...) and USD for the others."""
    listings: list[CatalogListing] = []
    for i, name in enumerate(sorted(PHOTO_FILES)):
        lid = f"P-{name}"
        images: tuple[Image.Image, ...] = (
            product_shot(SHAPES[i % len(SHAPES)], 1000 + i),
            photo(name),
        )
        payload = _payload(
            lid, f"{name} print", PHOTO_CATEGORIES[name], 10.0 * (i + 1), f"S{i % 3}", 2
        )
        listings.append(CatalogListing(lid, images, payload))
    for j in range(N_SYNTHETIC):
        shape = SHAPES[j % len(SHAPES)]
        lid = f"G-{shape}-{j}"
        n = 1 + j % 2
        images = tuple(product_shot(shape, 2000 + 10 * j + m) for m in range(n))
        state = "sold" if j == N_SYNTHETIC - 1 else "active"
        currency = "EUR" if j % 5 == 2 else "USD"
        category = SYNTHETIC_CATEGORIES[shape]
        price = 5.0 * (j + 1)
        payload = _payload(lid, f"{shape} {j}", category, price, f"S{j % 3}", n, state, currency)
        listings.append(CatalogListing(lid, images, payload))
    return tuple(listings)


@cache
def embedder() -> Embedder:
    """The real model on the CPU, loaded once per test process."""
    return Embedder.from_settings(ModelSettings(device="cpu"))


@cache
def catalog_vectors() -> dict[str, np.ndarray]:
    """Every catalog listing's image embeddings, computed once per test process."""
    model = embedder()
    out: dict[str, np.ndarray] = {}
    for listing in catalog():
        out[listing.listing_id] = model.embed(listing.images)
    return out


async def fill_store(store: VectorStore, model_id: str) -> None:
    """Write the whole catalog the way the worker does: one multivector point per listing."""
    vectors = catalog_vectors()
    for listing in catalog():
        payload = {**listing.payload, "model_id": model_id}
        rows = [row.tolist() for row in vectors[listing.listing_id]]
        await store.upsert_listing(ListingPoint(listing.listing_id, rows, payload))


def store_settings(backend: str, tmp_path: Path) -> StoreSettings:
    if backend == "edge":
        return StoreSettings(index_path=tmp_path / "index")
    return StoreSettings(qdrant_url=":memory:")


@asynccontextmanager
async def catalog_store(backend: str, tmp_path: Path) -> AsyncIterator[VectorStore]:
    """A real store of the given backend holding the test catalog."""
    model = embedder()
    store = open_store(store_settings(backend, tmp_path), model.model_id, model.dim)
    try:
        await store.ensure_collection()
        await fill_store(store, model.model_id)
        yield store
    finally:
        await store.close()


def fetch_settings(allow_private: bool = False) -> FetchSettings:
    """Fetching for tests: no retries, short timeouts; private hosts only when asked."""
    return FetchSettings(
        fetch_retries=0,
        fetch_connect_timeout_s=1.0,
        fetch_read_timeout_s=2.0,
        allow_private_image_hosts=allow_private,
    )


def api_settings(tmp_path: Path, **overrides: Any) -> ApiSettings:
    """Settings for a test app: CPU, small limits where a test needs them, fast fetch timeouts."""
    fetch = overrides.pop("fetch", fetch_settings())
    images = overrides.pop("images", ImageSettings())
    return ApiSettings(
        port=0,
        embedding=ModelSettings(device="cpu"),
        images=images,
        fetch=fetch,
        store=StoreSettings(index_path=tmp_path / "index"),
        **overrides,
    )


@asynccontextmanager
async def app_client(
    settings: ApiSettings,
    store: VectorStore | None = None,
    *,
    own_model: bool = False,
    fetcher: ImageFetcher | None = None,
) -> AsyncIterator[TestClient[Any, Any]]:
    """The real app on a loopback test server, sharing the process-wide model unless own_model."""
    runner = None if own_model else AsyncEmbedder(embedder())
    app = create_app(settings, embedder=runner, store=store, fetcher=fetcher)
    client: TestClient[Any, Any] = TestClient(
        TestServer(app, max_line_size=MAX_REQUEST_LINE, max_field_size=MAX_HEADER_FIELD)
    )
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()
        if runner is not None:
            runner.close()


def image_upload(data: bytes, filename: str = "photo.jpg") -> Any:
    """A multipart body with the photo in field 'image'."""
    import aiohttp

    form = aiohttp.FormData()
    form.add_field("image", data, filename=filename, content_type="application/octet-stream")
    return form


def png_bytes(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def listing_ids(body: dict[str, Any]) -> list[str]:
    return [item["id"] for item in body["listings"]]


def error_of(body: Any) -> tuple[str, str]:
    """(code, message) of an error body, asserting its shape."""
    assert set(body) == {"error"}, json.dumps(body)[:300]
    error = body["error"]
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    return error["code"], error["message"]


def metric_value(text: str, sample: str, labels: dict[str, str] | None = None) -> float | None:
    """The value of one sample in a Prometheus text exposition, or None when absent."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == sample and s.labels == (labels or {}):
                return float(s.value)
    return None


def ids_in(listings: Sequence[CatalogListing]) -> set[str]:
    return {listing.listing_id for listing in listings}


async def start_service(
    index_path: Path, env_extra: dict[str, str], timeout_s: float = 120
) -> tuple[asyncio.subprocess.Process, str]:
    """`python -m query` on a free loopback port over an index; returns (process, its URL) once
    it prints `api: URL`. The caller stops the process."""
    env = {
        **os.environ,
        "LOOKALIKE_HOST": "127.0.0.1",
        "LOOKALIKE_PORT": "0",
        "LOOKALIKE_INDEX_PATH": str(index_path),
        **env_extra,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "query",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), timeout_s)).decode().strip()
        if not line.startswith("api: "):
            raise RuntimeError(f"the service did not start: {line!r}")
    except BaseException:
        proc.kill()
        await proc.wait()
        raise
    return proc, line.removeprefix("api: ").rstrip("/")
