"""Browser tests' helpers: Debian's chromium under Playwright, kept off the network, and the test
catalog served with its photos from a loopback image server, so the page shows real pictures."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from aiohttp import web
from playwright.async_api import Browser, FilePayload, Page, async_playwright

from models.embedder import AsyncEmbedder
from models.store.factory import open_store
from models.store.types import ListingPoint, VectorStore
from query.app import create_app
from query.serve import start_site
from query.settings import ApiSettings
from tests.imageserver import ImageServer
from tests.photos import jpeg_bytes
from tests.query_support import catalog, catalog_vectors, embedder, store_settings

CHROMIUM = Path("/usr/bin/chromium")
# Headless, no sandbox (containers run as root), and nothing that phones home: no updates, sync,
# background fetches, QUIC; every host name but loopback fails to resolve.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
)
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}


def chromium_path() -> Path:
    """Where the browser is; a clear failure, not a skip, when it is not installed."""
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: `make install` installs Debian's chromium"
    return CHROMIUM


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """Debian's chromium driven by Playwright; `make install` puts it at /usr/bin/chromium."""
    executable = chromium_path()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(executable), headless=True, args=list(CHROMIUM_ARGS)
        )
        try:
            yield browser
        finally:
            await browser.close()


@asynccontextmanager
async def served_catalog(tmp_path: Path, images: ImageServer) -> AsyncIterator[VectorStore]:
    """An Edge store holding the test catalog, each listing's photos served by `images`."""
    model = embedder()
    store = open_store(store_settings("edge", tmp_path), model.model_id, model.dim)
    try:
        await store.ensure_collection()
        vectors = catalog_vectors()
        for listing in catalog():
            urls = [
                images.add(f"{listing.listing_id}/{i}.jpg", jpeg_bytes(image))
                for i, image in enumerate(listing.images)
            ]
            payload = {
                **listing.payload,
                "model_id": model.model_id,
                "image_urls": urls,
                "source_image_urls": urls,
            }
            rows = [row.tolist() for row in vectors[listing.listing_id]]
            await store.upsert_listing(ListingPoint(listing.listing_id, rows, payload))
        yield store
    finally:
        await store.close()


@asynccontextmanager
async def running_app(settings: ApiSettings, store: VectorStore) -> AsyncIterator[str]:
    """The real app on a real loopback port, sharing the process-wide model; yields its base URL."""
    model = AsyncEmbedder(embedder())
    app: web.Application = create_app(settings, embedder=model, store=store)
    runner, url = await start_site(app, "127.0.0.1", 0)
    try:
        yield url
    finally:
        await runner.cleanup()
        model.close()


def upload(name: str, data: bytes, mime_type: str = "image/jpeg") -> FilePayload:
    """A file for Playwright's set_input_files / set_files."""
    return FilePayload(name=name, mimeType=mime_type, buffer=data)


async def card_ids(page: Page) -> list[str]:
    """The listing ids of the result cards, in grid order."""
    ids: list[str] = await page.locator("#grid > li.card").evaluate_all(
        "cards => cards.map(c => c.dataset.listingId)"
    )
    return ids


# Functions, not bare expressions: the page's CSP forbids eval, which Playwright uses for those.
ANSWERED = "() => Number(document.documentElement.dataset.answered || 0)"


@asynccontextmanager
async def answered(page: Page) -> AsyncIterator[None]:
    """Around an action that makes the page call the API: on exit, its answer is on the page."""
    before = await page.evaluate(ANSWERED)
    yield
    await page.wait_for_function(f"before => ({ANSWERED})() > before", arg=before)


async def grid_rows(page: Page) -> list[float | None]:
    """The grid in order: each card's score, and None for the "less similar" divider."""
    rows: list[float | None] = await page.locator("#grid > li").evaluate_all(
        "items => items.map(li => li.classList.contains('divider') ? null"
        " : Number(li.dataset.score))"
    )
    return rows


async def images_loaded(page: Page) -> None:
    """Until every photo in view has loaded (or failed to); lazy ones below wait for a scroll."""
    await page.wait_for_function(
        "() => Array.from(document.images)"
        ".filter(img => img.getBoundingClientRect().top < innerHeight)"
        ".every(img => img.complete)"
    )
