"""Route handlers: search by photo, similar, one listing, categories, config, health, readiness,
metrics, spec."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TypeVar

import numpy as np
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from models.duplicates import group_key, stored_group
from models.fetch import FetchTimeout
from models.images import Crop, CropTooSmall
from models.microbatch import BatcherClosedError
from models.schema import events_schema
from models.store.types import Hit, ListingNotFound, SearchFilters, StoredListing, StoreError
from query.body import read_photo
from query.collapse import Page, collapsed_page, duplicate_counts
from query.errors import ApiError, OverloadedError
from query.keys import ADMISSION, BATCHER, EMBEDDER, METRICS, PHOTOS, SETTINGS, STORE
from query.openapi import MAX_ID_LENGTH, MAX_OFFSET, openapi_spec
from query.page import add_page_routes
from query.params import SearchParams, parse_crop, parse_search_params, refuse_parameters
from query.render import category_tree, render_hit, render_listing
from query.settings import MAX_K

log = logging.getLogger(__name__)

# Category prefixes /v1/categories lists at most (a marketplace taxonomy has a few thousand).
MAX_FACET = 10_000

T = TypeVar("T")


async def _store_call(request: web.Request, operation: str, call: Awaitable[T]) -> T:
    """A store call, timed; a store that fails makes the service unavailable, not broken."""
    with request.app[METRICS].store_timer(operation):
        try:
            return await call
        except ListingNotFound as exc:
            raise ApiError(404, "listing_not_found", str(exc)) from None
        except StoreError as exc:
            # The detail (paths, hosts) is for the log, not for clients.
            log.warning("store %s failed: %s", operation, exc)
            raise ApiError(503, "store_unavailable", "the vector store is unavailable") from None
        except (asyncio.CancelledError, ApiError):
            raise
        except Exception as exc:
            log.exception("store %s failed", operation)
            raise ApiError(503, "store_unavailable", "the vector store is unavailable") from exc


def _next_page(request: web.Request, params: SearchParams, full: bool) -> str | None:
    """This request's path and query with the offset moved on a page; None after the last."""
    offset = params.offset + params.k
    if not full or offset > MAX_OFFSET:
        return None
    return str(request.rel_url.update_query(offset=str(offset)))


async def _ranked(
    request: web.Request,
    operation: str,
    fetch: Callable[[int, int], Awaitable[list[Hit]]],
    params: SearchParams,
    skip_group: str | None = None,
) -> Page:
    """A page of `fetch(k, offset)`'s hits, one per duplicate group unless collapse=none."""
    if not params.collapse:
        hits = await _store_call(request, operation, fetch(params.k, params.offset))
        return Page(hits, full=len(hits) == params.k)
    page = collapsed_page(lambda k: fetch(k, 0), params.offset, params.k, skip_group)
    return await _store_call(request, operation, page)


async def _results(
    request: web.Request, params: SearchParams, page: Page, start: float
) -> web.Response:
    counts: dict[str, int] = {}
    if params.collapse and page.hits:
        store = request.app[STORE]
        counted = duplicate_counts(store, page.hits, params.filters)
        counts = await _store_call(request, "facet", counted)
    return web.json_response(
        {
            "listings": [render_hit(hit, counts.get(hit.listing_id)) for hit in page.hits],
            "offset": params.offset,
            "next": _next_page(request, params, page.full),
            "took_ms": round((time.perf_counter() - start) * 1000, 3),
            "model_id": request.app[EMBEDDER].model_id,
        }
    )


def _listing_id(request: web.Request) -> str:
    listing_id = request.match_info["listing_id"]
    if not listing_id.strip() or len(listing_id) > MAX_ID_LENGTH:
        raise ApiError(400, "bad_parameter", f"listing_id must be 1 to {MAX_ID_LENGTH} characters")
    return listing_id


async def _fetch(request: web.Request, url: str) -> bytes:
    timeout = request.app[SETTINGS].image_url_timeout_s
    try:
        async with asyncio.timeout(timeout):
            return await request.app[PHOTOS].fetch(url)
    except TimeoutError:
        raise FetchTimeout(f"image_url took longer than {timeout:g} s in all", url) from None


async def _embed(request: web.Request, data: bytes, crop: Crop | None = None) -> np.ndarray:
    """The embedding of the photo, or of its region `crop`, if it can start within the queue
    budget (else 503 overloaded). The admission price is the whole photo's: it is all decoded."""
    admission = request.app[ADMISSION]
    batcher = request.app[BATCHER]
    photos = request.app[PHOTOS]
    arrived = time.monotonic()
    # Priced from its header before it queues: refusals of the header itself come back at once.
    with admission.probing():
        probe = await photos.probe(data)
    async with admission.decoding(probe, arrived) as admitted:
        with batcher.announced():
            try:
                image = await photos.decode(data, crop)
            except CropTooSmall as exc:
                raise ApiError(400, "crop_too_small", str(exc), parameter="crop") from None
    with admission.embedding():
        try:
            async with asyncio.timeout(max(0.0, admitted.answer_by - time.monotonic())):
                return await batcher.embed(image)
        except BatcherClosedError as exc:
            raise ApiError(503, "not_ready", str(exc)) from None
        except TimeoutError:
            raise OverloadedError(admission.predicted_wait(), "deadline") from None


async def search(request: web.Request) -> web.Response:
    start = time.perf_counter()
    settings = request.app[SETTINGS]
    params = parse_search_params(request.query, settings.default_k, also=frozenset({"crop"}))
    crop = parse_crop(request.query)
    # Before the body is read: a service already over its budget refuses in microseconds.
    request.app[ADMISSION].check_arrival()
    photo = await read_photo(request, settings.max_upload_bytes, settings.max_json_bytes)
    if photo.crop is not None:
        if crop is not None:
            raise ApiError(
                400,
                "bad_parameter",
                "crop: given both in the query and in the body",
                parameter="crop",
            )
        crop = photo.crop
    data = photo.data if photo.data is not None else await _fetch(request, str(photo.url))
    vectors = (await _embed(request, data, crop))[None, :]
    store = request.app[STORE]

    def fetch(k: int, offset: int) -> Awaitable[list[Hit]]:
        return store.search(vectors, k, params.filters, offset=offset, min_score=params.min_score)

    page = await _ranked(request, "search", fetch, params)
    return await _results(request, params, page, start)


async def _live_listing(request: web.Request, listing_id: str) -> StoredListing:
    listing = await _store_call(request, "get", request.app[STORE].get(listing_id))
    # A tombstone only keeps a deleted or unlisted listing's version: to clients it is gone.
    if listing is None or listing.tombstone:
        raise ApiError(404, "listing_not_found", f"no listing {listing_id!r}")
    return listing


async def similar(request: web.Request) -> web.Response:
    """More like this: other products, so the listing's own duplicate group is left out."""
    start = time.perf_counter()
    listing_id = _listing_id(request)
    params = parse_search_params(request.query, request.app[SETTINGS].default_k)
    store = request.app[STORE]
    own = None
    if params.collapse:
        listing = await _live_listing(request, listing_id)
        own = group_key(listing.payload, listing_id)

    def fetch(k: int, offset: int) -> Awaitable[list[Hit]]:
        # An unknown id comes back from the store as ListingNotFound, answered 404.
        return store.similar(
            listing_id, k, params.filters, offset=offset, min_score=params.min_score
        )

    page = await _ranked(request, "similar", fetch, params, skip_group=own)
    hits = [hit for hit in page.hits if hit.listing_id != listing_id]
    return await _results(request, params, Page(hits, page.full), start)


async def duplicates(request: web.Request) -> web.Response:
    """The other listings of this listing's duplicate group under the filters, best match
    first."""
    start = time.perf_counter()
    listing_id = _listing_id(request)
    params = parse_search_params(request.query, request.app[SETTINGS].default_k, collapsible=False)
    listing = await _live_listing(request, listing_id)
    group = stored_group(listing.payload)
    hits: list[Hit] = []
    if group is not None:
        within = replace(params.filters, duplicate_groups=(group,))
        call = request.app[STORE].similar(
            listing_id, params.k, within, offset=params.offset, min_score=params.min_score
        )
        hits = await _store_call(request, "similar", call)
    return await _results(request, params, Page(hits, len(hits) == params.k), start)


async def categories(request: web.Request) -> web.Response:
    """The category tree with live-listing counts, from a facet query on the index."""
    refuse_parameters(request.query, frozenset())
    store = request.app[STORE]
    # What a search could find: listings for sale now.
    live = SearchFilters()
    counts = await _store_call(
        request, "facet", store.facet("category_path", live, limit=MAX_FACET)
    )
    total = await _store_call(request, "count", store.count(live))
    return web.json_response({"categories": category_tree(counts), "total": total})


async def config(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    return web.json_response(
        {
            "relevance_threshold": settings.relevance_threshold,
            "default_k": settings.default_k,
            "max_k": MAX_K,
            "max_offset": MAX_OFFSET,
        }
    )


async def get_listing(request: web.Request) -> web.Response:
    listing = await _live_listing(request, _listing_id(request))
    return web.json_response(render_listing(listing))


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    embedder = request.app[EMBEDDER]
    store = request.app[STORE]
    timeout = request.app[SETTINGS].ready_timeout_s
    try:
        async with asyncio.timeout(timeout):
            size = await _store_call(request, "vector_size", store.vector_size())
    except TimeoutError:
        raise ApiError(503, "not_ready", f"the store did not answer within {timeout} s") from None
    except ApiError as exc:
        raise ApiError(503, "not_ready", exc.message) from None
    if size != embedder.dim:
        raise ApiError(
            503,
            "not_ready",
            f"the collection holds {size}-d vectors but the model makes {embedder.dim}-d ones",
        )
    return web.json_response(
        {
            "status": "ready",
            "model_id": embedder.model_id,
            "dim": embedder.dim,
            "collection": store.collection_name,
        }
    )


async def metrics(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[METRICS].exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_spec())


async def event_schema(request: web.Request) -> web.Response:
    return web.json_response(events_schema())


def add_routes(app: web.Application, *, with_metrics: bool = True) -> None:
    """Every route of the service, the search page (GET /, from query/static) included;
    /metrics unless it is served on a port of its own."""
    app.router.add_post("/v1/search", search)
    app.router.add_get("/v1/listings/{listing_id}", get_listing)
    app.router.add_get("/v1/listings/{listing_id}/similar", similar)
    app.router.add_get("/v1/listings/{listing_id}/duplicates", duplicates)
    app.router.add_get("/v1/categories", categories)
    app.router.add_get("/v1/config", config)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    if with_metrics:
        app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/v1/schema/events", event_schema)
    add_page_routes(app)
