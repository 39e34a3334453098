"""The aiohttp app factory: resources live in cleanup_ctx generators under typed keys."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor

from aiohttp import web

from models.allocator import keep_big_blocks_mapped
from models.embedder import AsyncEmbedder, Embedder
from models.fetch import ImageFetcher
from models.images import ImageLimits
from models.microbatch import MicroBatcher
from models.photos import PhotoPipeline
from models.store.factory import open_store
from models.store.types import VectorStore
from query.admission import Admission
from query.keys import ADMISSION, BATCHER, EMBEDDER, FETCHER, METRICS, PHOTOS, SETTINGS, STORE
from query.metrics import ApiMetrics
from query.middleware import error_middleware
from query.settings import ApiSettings
from query.views import add_routes

log = logging.getLogger(__name__)

CleanupCtx = Callable[[web.Application], AsyncIterator[None]]


def _embedder_ctx(settings: ApiSettings, given: AsyncEmbedder | None) -> CleanupCtx:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        if given is not None:
            app[EMBEDDER] = given
            yield
            return
        runner = await AsyncEmbedder.load(settings.embedding)
        embedder = runner.embedder
        # The first pass pays for allocations and kernel choice; no request should.
        await runner.warmup()
        log.info("model %s loaded on %s", embedder.model_id, embedder.device)
        app[EMBEDDER] = runner
        try:
            yield
        finally:
            runner.close()

    return ctx


def _store_ctx(settings: ApiSettings, given: VectorStore | None) -> CleanupCtx:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        if given is not None:
            app[STORE] = given
            yield
            return
        embedder = app[EMBEDDER]
        store = open_store(settings.store, embedder.model_id, embedder.dim)
        try:
            await store.ensure_collection()
            app[STORE] = store
            yield
        finally:
            await store.close()

    return ctx


def _fetcher_ctx(settings: ApiSettings, given: ImageFetcher | None) -> CleanupCtx:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        if given is not None:
            app[FETCHER] = given
            yield
            return
        # A shopper waits for the answer: one retry at most (the indexer may try harder).
        fetch = settings.fetch.model_copy(
            update={"fetch_retries": min(settings.fetch.fetch_retries, 1)}
        )
        fetcher = ImageFetcher(fetch, max_bytes=settings.images.max_image_bytes)
        app[FETCHER] = fetcher
        try:
            yield
        finally:
            await fetcher.close()

    return ctx


def _decode_pool(settings: ApiSettings) -> Executor:
    """The decoders of uploads. Processes by default: some of Pillow's codecs (WebP) hold the
    GIL for a hundred milliseconds at a time, which in a thread stalls the event loop and every
    answer with it, the fast 503s of admission control included. A process also keeps the big
    buffers of a decode out of the service's own heap. Spawned, never forked: the parent runs
    torch's threads."""
    if not settings.decode_processes:
        return ThreadPoolExecutor(max_workers=settings.decode_threads, thread_name_prefix="decode")
    return ProcessPoolExecutor(
        max_workers=settings.decode_threads,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=keep_big_blocks_mapped,
    )


async def _start_decoders(pool: Executor, workers: int) -> None:
    # A process pool starts its processes on first use; no search should wait for that.
    loop = asyncio.get_running_loop()
    starts = [loop.run_in_executor(pool, keep_big_blocks_mapped) for _ in range(workers)]
    await asyncio.gather(*starts)


def _photos_ctx(settings: ApiSettings) -> CleanupCtx:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        keep_big_blocks_mapped()
        # Decoders of the app's own: a burst of uploads must not queue behind, or hold up, the
        # default executor, where image_url fetches resolve their host names.
        pool = _decode_pool(settings)
        # Header probes price a photo for admission control while every decoder is busy.
        probes = ThreadPoolExecutor(max_workers=1, thread_name_prefix="probe")
        try:
            await _start_decoders(pool, settings.decode_threads)
            limits = ImageLimits(
                max_bytes=settings.images.max_image_bytes, max_pixels=settings.api_max_image_pixels
            )
            app[PHOTOS] = PhotoPipeline(
                app[FETCHER], pool, app[EMBEDDER].embedder.preprocessing, limits, probe_pool=probes
            )
            yield
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
            probes.shutdown(wait=False, cancel_futures=True)

    return ctx


CPU_BATCH_SIZE = 4


def default_batch_size(embedder: Embedder) -> int:
    """The micro-batch size when none is configured: one forward pass of the model's own batch
    size, but at most 4 photos on a CPU, where bigger batches lower the rate (bench.query)."""
    if embedder.device.type == "cpu":
        return min(CPU_BATCH_SIZE, embedder.max_batch)
    return embedder.max_batch


def _batcher_ctx(settings: ApiSettings) -> CleanupCtx:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        embedder = app[EMBEDDER]
        metrics = app[METRICS]
        admission = Admission(
            settings.queue_budget_ms / 1000,
            decode_slots=settings.decode_threads,
            embed_streams=embedder.streams,
            on_wait=metrics.queue_delay.set,
        )
        app[ADMISSION] = admission

        def on_pass(photos: int, seconds: float) -> None:
            metrics.observe_pass(photos, seconds)
            admission.costs.observe_pass(photos, seconds)

        batcher = MicroBatcher(
            embedder.embed,
            concurrency=embedder.streams,
            max_batch=settings.batch_max_size or default_batch_size(embedder.embedder),
            max_wait_s=settings.batch_max_wait_ms / 1000,
            on_pass=on_pass,
        )
        batcher.start()
        app[BATCHER] = batcher
        try:
            yield
        finally:
            await batcher.close()

    return ctx


async def _plain_server_header(request: web.Request, response: web.StreamResponse) -> None:
    # aiohttp's default names its own and Python's versions: a gift to anyone picking exploits.
    response.headers["Server"] = "lookalike"


def create_app(
    settings: ApiSettings,
    *,
    embedder: AsyncEmbedder | None = None,
    store: VectorStore | None = None,
    fetcher: ImageFetcher | None = None,
) -> web.Application:
    """The query service. Resources passed in (the dev stack shares one store and model between
    the worker and the API) are used as they are and left open; the app closes what it opened.
    A given store must already have had ensure_collection() called."""
    metrics = ApiMetrics()
    # Bodies are read and capped by the views themselves; this is a backstop for anything else.
    max_body = max(settings.max_upload_bytes, settings.max_json_bytes)
    middleware = error_middleware(
        metrics, detailed_fetch_errors=settings.fetch.allow_private_image_hosts
    )
    app = web.Application(client_max_size=max_body, middlewares=[middleware])
    app.on_response_prepare.append(_plain_server_header)
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app.cleanup_ctx.extend(
        [
            _embedder_ctx(settings, embedder),
            _store_ctx(settings, store),
            _fetcher_ctx(settings, fetcher),
            _photos_ctx(settings),
            _batcher_ctx(settings),
        ]
    )
    add_routes(app, with_metrics=settings.metrics_port is None)
    return app
