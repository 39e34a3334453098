"""The search page in a real browser: Debian's chromium under Playwright, against the real app,
the real model and a real store whose listing photos come from a loopback image server."""

from __future__ import annotations

import base64
import io
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp.test_utils import unused_port
from PIL import Image
from playwright.async_api import Browser, FloatRect, Page, expect

from models.settings import ImageSettings, StoreSettings
from models.store.factory import open_store
from models.store.types import ListingPoint, VectorStore
from tests.imageserver import ImageServer, serve_images
from tests.page_support import (
    ANSWERED,
    ARTIFACTS,
    DESKTOP,
    PHONE,
    answered,
    card_ids,
    chromium,
    grid_rows,
    images_loaded,
    running_app,
    served_catalog,
    upload,
)
from tests.photos import photo_bytes, rephotographed, side_by_side
from tests.query_support import api_settings, catalog, embedder
from tests.stream_support import generated_photo

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

NOT_AN_IMAGE = "That file is not an image"
BLOB = re.compile(r"^blob:http://127\.0\.0\.1:\d+/")
SCORE = re.compile(r"^Similarity -?\d\.\d{2}$")


@dataclass
class Site:
    url: str
    images: ImageServer
    store: VectorStore


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def site(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Site]:
    tmp_path = tmp_path_factory.mktemp("page")
    async with (
        serve_images() as images,
        served_catalog(tmp_path, images) as store,
        running_app(api_settings(tmp_path), store) as url,
    ):
        yield Site(url, images, store)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as started:
        yield started


@dataclass
class Visit:
    page: Page
    requests: list[str]
    errors: list[str]


@asynccontextmanager
async def open_page(browser: Browser, url: str, **context: Any) -> AsyncIterator[Visit]:
    """A fresh browser context on the page; on exit, no script error and nothing off loopback."""
    ctx = await browser.new_context(**context)
    # A page that never shows what is awaited fails in seconds, not after Playwright's 30 s.
    ctx.set_default_timeout(15_000)
    page = await ctx.new_page()
    visit = Visit(page, [], [])
    page.on("request", lambda r: visit.requests.append(r.url))
    page.on("pageerror", lambda e: visit.errors.append(str(e)))
    # Playwright subscribes to file choosers without waiting; subscribing here, long before any
    # chooser opens, keeps expect_file_chooser from racing the key press that opens one.
    page.on("filechooser", lambda chooser: None)
    try:
        await page.goto(url + "/")
        # The module has run once the page says so: every handler is in place.
        await page.wait_for_selector("html.ready", state="attached")
        yield visit
        assert visit.errors == [], visit.errors
        # Everything the page asked for came from loopback: the app or the listings' photo host.
        assert all(u.startswith(("http://127.0.0.1:", "blob:", "data:")) for u in visit.requests)
    finally:
        await ctx.close()


@pytest_asyncio.fixture(loop_scope="module")
async def desktop(browser: Browser, site: Site) -> AsyncIterator[Visit]:
    async with open_page(browser, site.url, viewport=DESKTOP) as visit:
        yield visit


@pytest_asyncio.fixture(loop_scope="module")
async def phone(browser: Browser, site: Site) -> AsyncIterator[Visit]:
    async with open_page(
        browser, site.url, viewport=PHONE, is_mobile=True, has_touch=True, device_scale_factor=2
    ) as visit:
        yield visit


async def search_photo(
    page: Page, data: bytes, name: str = "photo.jpg", mime: str = "image/jpeg"
) -> None:
    async with answered(page):
        await page.set_input_files("#file", upload(name, data, mime))


def stored(listing_id: str) -> dict[str, Any]:
    return next(c.payload for c in catalog() if c.listing_id == listing_id)


async def api_json(url: str) -> Any:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200
        return await resp.json()


async def api_ids(url: str) -> list[str]:
    body = await api_json(url)
    return [item["id"] for item in body["listings"]]


async def test_the_page_and_its_files_are_served_with_types_and_a_policy(site: Site) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{site.url}/") as resp:
            assert resp.status == 200
            assert resp.content_type == "text/html"
            csp = resp.headers["Content-Security-Policy"]
            html = await resp.text()
        assert "default-src 'none'" in csp and "script-src 'self'" in csp
        assert 'src="/static/app.js"' in html and "https://" not in html
        for name, kind in [
            ("app.js", "text/javascript"),
            ("api.js", "text/javascript"),
            ("style.css", "text/css"),
        ]:
            async with session.get(f"{site.url}/static/{name}") as resp:
                assert (resp.status, resp.content_type) == (200, kind)
                assert resp.headers["X-Content-Type-Options"] == "nosniff"
        async with session.get(f"{site.url}/static/page.py") as resp:
            assert resp.status == 404
            assert (await resp.json())["error"]["code"] == "not_found"


async def test_a_photo_of_a_listing_shows_that_listing_first(desktop: Visit, site: Site) -> None:
    page = desktop.page
    await search_photo(page, rephotographed("coffee", angle=-3, crop=0.1))
    await expect(page.locator("#preview img")).to_have_attribute("src", BLOB)
    first = page.locator("#grid > li.card").first
    assert (await card_ids(page))[0] == "P-coffee"
    payload = stored("P-coffee")
    await expect(first.locator(".title")).to_have_text(payload["title"])
    await expect(first.locator(".price")).to_have_text(f"${payload['price_amount']}")
    await expect(first.locator(".shop")).to_have_text(f"Shop {payload['shop_id']}")
    await expect(first.locator(".score")).to_have_text(SCORE)
    await expect(first.locator("img")).to_have_attribute("alt", payload["title"])
    await images_loaded(page)
    # The card shows the listing's photo that matched (its second one, the real photo), loaded.
    assert site.images.count("P-coffee/1.jpg") >= 1
    assert await first.locator("img").evaluate("img => img.naturalWidth") > 0
    assert await page.locator("#grid > li.card").count() == 24
    await expect(page.locator("#status-text")).to_have_text("24 listings found.")
    # One "less similar" line, where the scores fall below the served cut-off (a tilted, cropped
    # photo of the listing already does), and above it the listing's own photo.
    threshold = (await api_json(f"{site.url}/v1/config"))["relevance_threshold"]
    for data, above in [
        (rephotographed("coffee", angle=-3, crop=0.1), 0),
        (photo_bytes("coffee"), 1),
    ]:
        if above:
            await search_photo(page, data, "coffee.png", "image/png")
        rows = await grid_rows(page)
        assert rows.count(None) == 1, rows
        line = rows.index(None)
        assert line >= above and all(s is not None and s >= threshold for s in rows[:line])
        assert all(s is not None and s < threshold for s in rows[line + 1 :])
    assert (await card_ids(page))[0] == "P-coffee"
    await expect(page.get_by_role("separator")).to_have_text("Less similar")
    # More results continue the ranking: no listing twice, and the divider stays single.
    await expect(page.get_by_role("button", name="More results")).to_be_visible()
    async with answered(page):
        await page.get_by_role("button", name="More results").click()
    ids = await card_ids(page)
    assert len(ids) == len(set(ids)) > 24
    assert (await grid_rows(page)).count(None) == 1


async def test_more_like_this_shows_new_results_without_the_listing(
    desktop: Visit, site: Site
) -> None:
    page = desktop.page
    await search_photo(page, rephotographed("coffee"))
    before = await card_ids(page)
    assert before[0] == "P-coffee"
    async with answered(page):
        await page.get_by_role(
            "button", name=f"More like this: {stored('P-coffee')['title']}"
        ).click()
    after = await card_ids(page)
    assert after and "P-coffee" not in after and after != before
    # What the page shows is what the public API answers.
    assert after == await api_ids(f"{site.url}/v1/listings/P-coffee/similar")
    await expect(page.locator("#results-heading")).to_have_text(
        f"More like “{stored('P-coffee')['title']}”"
    )
    await expect(page.locator("#results-heading")).to_be_focused()
    assert page.url.endswith("#like=P-coffee")
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=ARTIFACTS / "page-desktop-similar.png")
    # Back returns to the photo's results.
    async with answered(page):
        await page.go_back()
    assert (await card_ids(page))[0] == "P-coffee"


async def test_a_more_like_this_link_opens_on_its_own(desktop: Visit, site: Site) -> None:
    page = await desktop.page.context.new_page()
    await page.goto(f"{site.url}/#like=G-mug-0")
    await page.wait_for_function(f"() => ({ANSWERED})() > 0")
    await expect(page.locator("#results-heading")).to_have_text("More like “mug 0”")
    ids = await card_ids(page)
    assert ids and "G-mug-0" not in ids
    assert ids == await api_ids(f"{site.url}/v1/listings/G-mug-0/similar")
    # The preview is the listing's first photo, as GET /v1/listings/{id} lists it.
    await expect(page.locator("#preview img")).to_have_attribute(
        "src", site.images.url("G-mug-0/0.jpg")
    )
    await page.close()


async def test_a_text_file_shows_the_not_an_image_message(desktop: Visit) -> None:
    page = desktop.page
    await search_photo(page, rephotographed("coffee"))
    assert await card_ids(page)
    await search_photo(page, b"just some words\n", "notes.txt", "text/plain")
    await expect(page.get_by_role("alert")).to_contain_text(NOT_AN_IMAGE)
    # Neither the refused file nor the earlier results stay on show.
    await expect(page.locator("#preview")).to_be_hidden()
    assert await card_ids(page) == []
    # A photo afterwards clears the message.
    await search_photo(page, rephotographed("chelsea"))
    await expect(page.get_by_role("alert")).to_have_text("")
    assert (await card_ids(page))[0] == "P-chelsea"


async def test_filters_narrow_the_results_by_category_and_price(desktop: Visit, site: Site) -> None:
    page = desktop.page
    await search_photo(page, rephotographed("coffee"))
    # The picker is the index's category tree, with its counts.
    tree = await api_json(f"{site.url}/v1/categories")
    jewelry = next(node for node in tree["categories"] if node["path"] == "jewelry")
    option = page.locator("#category option[value='jewelry']")
    await expect(option).to_have_text(f"jewelry ({jewelry['count']})")
    async with answered(page):
        await page.get_by_label("Category").select_option("jewelry")
    ids = await card_ids(page)
    assert ids and all(stored(i)["category"].startswith("jewelry/") for i in ids)
    async with answered(page):
        await page.get_by_label("Category").select_option("")
    # The results show dollars and euros; a price range takes the commonest of them.
    await expect(page.locator("#currency option")).to_have_text(["Any", "EUR", "USD"])
    await page.get_by_label("Max price").fill("20")
    async with answered(page):
        await page.get_by_label("Max price").press("Enter")
    await expect(page.get_by_label("Currency")).to_have_value("USD")
    ids = await card_ids(page)
    assert ids and all(stored(i)["price"] <= 20 for i in ids)
    assert all(stored(i)["currency"] == "USD" for i in ids)
    prices = await page.locator("#grid .price").all_inner_texts()
    assert all(float(p.lstrip("$")) <= 20 for p in prices)
    # Euros: the same range in the other currency.
    async with answered(page):
        await page.get_by_label("Currency").select_option("EUR")
        await page.get_by_role("button", name="Apply filters").click()
    ids = await card_ids(page)
    assert ids and all(stored(i)["currency"] == "EUR" and stored(i)["price"] <= 20 for i in ids)
    await page.get_by_label("Currency").select_option("USD")
    # A range that cannot hold anything is refused on the page, before any request.
    await page.get_by_label("Min price").fill("50")
    await page.get_by_role("button", name="Apply filters").click()
    await expect(page.get_by_role("alert")).to_have_text(
        "The minimum price is above the maximum price."
    )
    await expect(page.get_by_label("Min price")).to_be_focused()


async def test_drop_and_paste_search_too(desktop: Visit) -> None:
    page = desktop.page
    data = base64.b64encode(rephotographed("rocket")).decode()
    make_file = (
        "b64 => { const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));"
        " const dt = new DataTransfer();"
        " dt.items.add(new File([bytes], 'rocket.jpg', {type: 'image/jpeg'})); return dt; }"
    )
    async with answered(page):
        await page.evaluate(
            f"b64 => document.getElementById('drop-zone').dispatchEvent(new DragEvent('drop',"
            f" {{dataTransfer: ({make_file})(b64), bubbles: true, cancelable: true}}))",
            data,
        )
    assert (await card_ids(page))[0] == "P-rocket"
    data = base64.b64encode(rephotographed("flower")).decode()
    async with answered(page):
        await page.evaluate(
            f"b64 => document.dispatchEvent(new ClipboardEvent('paste',"
            f" {{clipboardData: ({make_file})(b64), bubbles: true, cancelable: true}}))",
            data,
        )
    assert (await card_ids(page))[0] == "P-flower"


async def test_keyboard_alone_chooses_a_photo_and_asks_for_more(desktop: Visit) -> None:
    page = desktop.page
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("link", name="Skip to results")).to_be_focused()
    await page.keyboard.press("Tab")
    choose = page.get_by_role("button", name="Choose a photo")
    await expect(choose).to_be_focused()
    async with page.expect_file_chooser() as chooser:
        await page.keyboard.press("Enter")
    async with answered(page):
        await (await chooser.value).set_files(upload("astronaut.jpg", rephotographed("astronaut")))
    assert (await card_ids(page))[0] == "P-astronaut"
    # On a desktop the camera button is not offered: the next stops are the filters, in order.
    for label in ["Category", "Currency", "Min price", "Max price"]:
        await page.keyboard.press("Tab")
        await expect(page.get_by_label(label)).to_be_focused()
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("button", name="Apply filters")).to_be_focused()
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("button", name="Clear")).to_be_focused()
    await page.keyboard.press("Tab")
    more = page.get_by_role("button", name="More like this: astronaut print")
    await expect(more).to_be_focused()
    async with answered(page):
        await page.keyboard.press("Enter")
    assert "P-astronaut" not in await card_ids(page)
    # Every photo has alt text: the listing's title on cards, a description on the preview.
    alts = await page.locator("img").evaluate_all("imgs => imgs.map(i => i.alt)")
    assert alts and all(alt.strip() for alt in alts)


async def test_screenshots_at_phone_and_desktop_width(phone: Visit, desktop: Visit) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    for visit, name, width in [(phone, "page-phone.png", 390), (desktop, "page-desktop.png", 1280)]:
        page = visit.page
        await search_photo(page, rephotographed("motorcycle"))
        assert (await card_ids(page))[0] == "P-motorcycle"
        await images_loaded(page)
        # Nothing wider than the screen: no sideways scrolling on a phone.
        assert await page.evaluate("document.documentElement.scrollWidth") <= width
        path = ARTIFACTS / name
        await page.screenshot(path=path)
        assert path.stat().st_size > 10_000
    # The grid on a phone, scrolled to.
    await phone.page.locator("#results-heading").evaluate("h => h.scrollIntoView()")
    await images_loaded(phone.page)
    await phone.page.screenshot(path=ARTIFACTS / "page-phone-results.png")
    # The phone offers its camera; the desktop does not.
    await expect(phone.page.get_by_role("button", name="Take a photo")).to_be_visible()
    await expect(desktop.page.get_by_role("button", name="Take a photo")).to_be_hidden()
    camera = phone.page.locator("#camera")
    await expect(camera).to_have_attribute("capture", "environment")
    await expect(camera).to_have_attribute("accept", "image/*")
    async with phone.page.expect_file_chooser() as chooser:
        await phone.page.get_by_role("button", name="Take a photo").tap()
    assert await (await chooser.value).element.get_attribute("id") == "camera"


async def drag_over(
    page: Page, start: tuple[float, float], end: tuple[float, float], touch: bool
) -> None:
    """A drag over the preview photo from `start` to `end` (fractions of it), by mouse or by a
    finger (touch events, which Chromium turns into the pointer events a phone sends)."""
    box = await page.locator("#preview-img").bounding_box()
    assert box is not None
    points = [
        (
            box["x"] + box["width"] * (start[0] + (end[0] - start[0]) * t / 5),
            box["y"] + box["height"] * (start[1] + (end[1] - start[1]) * t / 5),
        )
        for t in range(6)
    ]
    if not touch:
        await page.mouse.move(*points[0])
        await page.mouse.down()
        for x, y in points[1:]:
            await page.mouse.move(x, y)
        await page.mouse.up()
        return
    cdp = await page.context.new_cdp_session(page)
    for kind, (x, y) in zip(["touchStart"] + ["touchMove"] * 5, points, strict=True):
        await cdp.send(
            "Input.dispatchTouchEvent", {"type": kind, "touchPoints": [{"x": x, "y": y}]}
        )
    await cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    await cdp.detach()


async def layout(page: Page) -> list[FloatRect | None]:
    """Where the search panel's parts and the results heading are on the page."""
    return [
        await page.locator(selector).bounding_box()
        for selector in ("#drop-zone", ".pick", "#filters", "#results-heading")
    ]


async def test_a_box_dragged_over_the_photo_searches_that_region(
    desktop: Visit, phone: Visit
) -> None:
    data = side_by_side("chelsea", "rocket")
    for visit, touch in [(desktop, False), (phone, True)]:
        page = visit.page
        box = page.locator("#crop-box")
        whole = page.get_by_role("button", name="Use whole photo")
        # The preview's place is kept before there is a photo: nothing moves when it comes.
        before = await layout(page)
        await search_photo(page, data)
        assert await layout(page) == before
        await expect(box).to_be_hidden()
        await expect(whole).to_be_hidden()
        async with answered(page):
            await drag_over(page, (0.02, 0.03), (0.48, 0.97), touch)
        assert (await card_ids(page))[0] == "P-chelsea"
        await expect(box).to_be_visible()
        left = page.url.split("#", 1)[1]
        assert re.fullmatch(r"crop=0\.0\d*,0\.0\d*,0\.4\d*,0\.9\d*", left), left
        assert any("crop=" in url for url in visit.requests if "/v1/search" in url)
        # Drawn from the other corner, over the right half.
        async with answered(page):
            await drag_over(page, (0.98, 0.97), (0.52, 0.03), touch)
        assert (await card_ids(page))[0] == "P-rocket"
        assert await layout(page) == before
        ARTIFACTS.mkdir(exist_ok=True)
        await images_loaded(page)
        await page.screenshot(path=ARTIFACTS / f"page-{'phone' if touch else 'desktop'}-region.png")
        # A tap is no box: the one searched stays, and nothing is asked.
        answers = await page.evaluate(ANSWERED)
        await drag_over(page, (0.3, 0.3), (0.31, 0.31), touch)
        await expect(box).to_be_visible()
        assert await page.evaluate(ANSWERED) == answers
        # The box is in the link: Back returns to the left one.
        async with answered(page):
            await page.go_back()
        assert page.url.endswith("#" + left)
        assert (await card_ids(page))[0] == "P-chelsea"
        await expect(box).to_be_visible()
        async with answered(page):
            await (whole.tap() if touch else whole.click())
        await expect(box).to_be_hidden()
        assert "#" not in page.url


@pytest.mark.filterwarnings("ignore:Failed to obtain server version")
async def test_too_large_and_not_ready_have_their_messages(
    browser: Browser, tmp_path: Path
) -> None:
    model = embedder()
    # A store that cannot be reached: searches answer 503; a small image limit: big photos 413.
    dead = open_store(
        StoreSettings(qdrant_url=f"http://127.0.0.1:{unused_port()}"), model.model_id, model.dim
    )
    small = ImageSettings(max_image_bytes=64 * 1024)
    try:
        async with (
            running_app(api_settings(tmp_path, images=small), dead) as url,
            open_page(browser, url, viewport=PHONE) as visit,
        ):
            page = visit.page
            big = photo_bytes("chelsea")
            assert len(big) > 64 * 1024
            await search_photo(page, big, "chelsea.png", "image/png")
            await expect(page.get_by_role("alert")).to_have_text(
                "That photo is too large. Please choose a smaller one."
            )
            await search_photo(page, rephotographed("coffee"))
            await expect(page.get_by_role("alert")).to_have_text(
                "The search service is not ready yet. Please try again in a moment."
            )
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=ARTIFACTS / "page-phone-error.png")
    finally:
        await dead.close()


async def test_copies_from_other_shops_show_as_one_card_also_sold_by(
    desktop: Visit, site: Site
) -> None:
    photo = generated_photo(41)
    model = embedder()
    rows = [model.embed([Image.open(io.BytesIO(photo)).convert("RGB")])[0].tolist()]
    url = site.images.add("copies/0.jpg", photo)
    copies = ["DUP-1", "DUP-2", "DUP-3"]
    for i, listing_id in enumerate(copies):
        payload = {
            **stored("P-coffee"),
            "listing_id": listing_id,
            "title": f"Copy {i}",
            "shop_id": f"copy-shop-{i}",
            "image_urls": [url],
            "source_image_urls": [url],
            "model_id": model.model_id,
            "duplicate_group": "g-page-copies",
        }
        await site.store.upsert_listing(ListingPoint(listing_id, rows, payload))
    try:
        page = desktop.page
        await search_photo(page, photo)
        ids = await card_ids(page)
        assert len([i for i in ids if i in copies]) == 1 and ids[0] in copies, ids
        first = page.locator("#grid > li.card").first
        await expect(first.locator(".also")).to_have_text("Also sold by 2 other shops")
        await expect(page.locator("#grid > li.card").nth(1).locator(".also")).to_be_hidden()
    finally:
        for listing_id in copies:
            await site.store.delete(listing_id)
