"""`lookalike dev`: broker, indexer, store, API and demo catalog in one process and one loop."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import structlog
from aiohttp import web
from tqdm import tqdm

from lookalike.demo import DemoCatalog, build_catalog
from lookalike.health import include_worker
from models.embedder import AsyncEmbedder
from models.events import ListingDeleted, ListingUpserted
from models.fetch import ImageFetcher
from models.settings import BrokerSettings, FetchSettings, ModelSettings, StoreSettings
from models.store.factory import open_store
from models.store.types import VectorStore
from query.app import create_app
from query.serve import start_site
from query.settings import ApiSettings
from stream.broker import DevBroker
from stream.health import HealthPolicy, WorkerHealth
from stream.metrics import WorkerMetrics
from stream.publisher import ListingPublisher
from stream.resources import WorkerResources
from stream.settings import StreamSettings, WorkerSettings
from stream.worker import running_worker

log = structlog.get_logger("lookalike.dev")

PHOTO_ROUTE = "/photos"


@dataclass(frozen=True)
class DevOptions:
    """What `lookalike dev` was asked for on its command line."""

    data: Path = Path("data")
    host: str = "127.0.0.1"
    port: int = 8080
    broker: str | None = None
    qdrant_url: str | None = None
    demo: bool = True
    demo_size: int = 200
    demo_seed: int = 7


@dataclass(frozen=True)
class DevSettings:
    """The settings of the embedded worker and API, derived from the options and LOOKALIKE_*."""

    worker: WorkerSettings
    api: ApiSettings


def dev_settings(options: DevOptions, bootstrap: str) -> DevSettings:
    """Worker and API settings for the embedded stack. The worker may fetch from loopback (the
    demo's own image server); the API's image_url keeps the configured (default: strict) policy."""
    model = ModelSettings()
    store = StoreSettings(index_path=options.data / "index", qdrant_url=options.qdrant_url)
    worker = WorkerSettings(
        # No port of the worker's own: the stack's /readyz and /metrics answer for it.
        stream=StreamSettings(data_dir=str(options.data / "worker"), worker_port=None),
        broker=BrokerSettings(broker=bootstrap),
        model=model,
        fetch=FetchSettings(allow_private_image_hosts=True),
        store=store,
    )
    api = ApiSettings(host=options.host, port=options.port, embedding=model, store=store)
    return DevSettings(worker=worker, api=api)


@asynccontextmanager
async def _broker(options: DevOptions) -> AsyncIterator[tuple[str, DevBroker | None]]:
    if options.broker is not None:
        yield options.broker, None
        return
    broker = DevBroker()
    # Spawned from the loop's thread, which lives as long as the process: see DevBroker.spawn.
    broker.spawn()
    await asyncio.to_thread(broker.wait_ready)
    log.info("broker_started", bootstrap=broker.bootstrap, pid=broker.pid)
    try:
        yield broker.bootstrap, broker
    finally:
        await asyncio.to_thread(broker.stop)
        log.info("broker_stopped", bootstrap=broker.bootstrap)


@asynccontextmanager
async def _embedder(settings: ModelSettings) -> AsyncIterator[AsyncEmbedder]:
    runner = await AsyncEmbedder.load(settings)
    try:
        await runner.warmup()
        log.info("model_loaded", model_id=runner.model_id, device=str(runner.embedder.device))
        yield runner
    finally:
        runner.close()


@asynccontextmanager
async def _store(settings: StoreSettings, embedder: AsyncEmbedder) -> AsyncIterator[VectorStore]:
    # One store for the worker and the API: Edge lets one opener hold a shard.
    store = open_store(settings, embedder.model_id, embedder.dim)
    try:
        await store.ensure_collection()
        yield store
    finally:
        await store.close()
        log.info("store_closed", collection=store.collection_name)


@asynccontextmanager
async def _site(app: web.Application, host: str, port: int) -> AsyncIterator[str]:
    runner, url = await start_site(app, host, port)
    try:
        yield url
    finally:
        await runner.cleanup()


def _photo_server(directory: Path) -> web.Application:
    app = web.Application()
    app.router.add_static(PHOTO_ROUTE, directory)
    return app


@asynccontextmanager
async def _worker(
    settings: WorkerSettings,
    embedder: AsyncEmbedder,
    store: VectorStore,
    health: WorkerHealth,
    metrics: WorkerMetrics,
) -> AsyncIterator[None]:
    fetcher = ImageFetcher(settings.fetch, max_bytes=settings.images.max_image_bytes)
    decode_pool = ThreadPoolExecutor(
        max_workers=settings.stream.decode_threads, thread_name_prefix="lookalike-decode"
    )
    resources = WorkerResources(
        settings=settings,
        embedder=embedder,
        store=store,
        fetcher=fetcher,
        preprocessing=embedder.embedder.preprocessing,
        # Shared with the API: closed here, after both stopped, not by the worker.
        owned=False,
        decode_pool=decode_pool,
        metrics=metrics,
    )
    try:
        async with AsyncExitStack() as stack:
            stack.callback(log.info, "worker_stopped")
            await stack.enter_async_context(running_worker(settings, resources, health))
            log.info("worker_started", group=settings.stream.group_id)
            yield
    finally:
        await fetcher.close()
        decode_pool.shutdown(wait=False, cancel_futures=True)


async def _indexed(store: VectorStore, expected: Mapping[str, int]) -> int:
    """How many listings are stored at (at least) the version they were published with."""
    done = 0
    async for listing in store.scroll():
        want = expected.get(listing.listing_id)
        if want is not None and listing.version is not None and listing.version >= want:
            done += 1
    return done


async def _deleted(store: VectorStore) -> set[str]:
    """Listings a previous run deleted (their tombstones): the demo does not bring them back."""
    return {
        listing.listing_id
        async for listing in store.scroll(include_tombstones=True)
        if listing.tombstone
    }


async def _publish(
    bootstrap: str, topic: str, events: list[ListingUpserted | ListingDeleted]
) -> None:
    def send() -> None:
        with ListingPublisher(bootstrap, topic) as publisher:
            publisher.publish_many(events)

    await asyncio.to_thread(send)


async def run_demo(
    catalog: DemoCatalog, photos_url: str, bootstrap: str, topic: str, store: VectorStore
) -> None:
    """Publish the catalog, show indexing progress, then publish a few live edits."""
    # Newer than anything a previous run published, so a persistent broker or index re-applies it
    # (the photo server's address changes between runs); what a run deleted stays deleted.
    version = time.time_ns() // 1_000_000
    deleted = await _deleted(store)
    upserts = [e for e in catalog.upserts(photos_url, version) if e.listing_id not in deleted]
    await _publish(bootstrap, topic, list(upserts))
    log.info("demo_published", listings=len(upserts), version=version)
    expected = {event.listing_id: version for event in upserts}
    started = time.monotonic()
    with tqdm(total=len(expected), desc="indexing demo", unit="listing", file=sys.stderr) as bar:
        while (done := await _indexed(store, expected)) < len(expected):
            bar.update(done - bar.n)
            await asyncio.sleep(0.5)
        bar.update(done - bar.n)
    log.info("demo_indexed", listings=len(expected), seconds=round(time.monotonic() - started, 1))
    edits = [e for e in catalog.edit_events(photos_url, version + 1) if e.listing_id not in deleted]
    if edits:
        await _publish(bootstrap, topic, edits)
        log.info(
            "demo_edits_published",
            edits=[f"{edit.kind} {edit.listing.listing_id}" for edit in catalog.edits],
        )


def _log_demo_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("demo_failed", error=repr(task.exception()))


async def run_dev(options: DevOptions, out: TextIO | None = None) -> None:
    """Start the stack, announce it on `out`, and serve until cancelled; then stop everything."""
    out = out or sys.stdout
    async with AsyncExitStack() as stack:
        catalog_task = (
            asyncio.ensure_future(
                asyncio.to_thread(build_catalog, options.demo_size, options.demo_seed)
            )
            if options.demo
            else None
        )
        bootstrap, own_broker = await stack.enter_async_context(_broker(options))
        settings = dev_settings(options, bootstrap)
        embedder = await stack.enter_async_context(_embedder(settings.worker.model))
        store = await stack.enter_async_context(_store(settings.worker.store, embedder))
        photos_url: str | None = None
        catalog: DemoCatalog | None = None
        if catalog_task is not None:
            catalog = await catalog_task
            photo_dir = options.data / "demo" / "photos"
            await asyncio.to_thread(catalog.write_photos, photo_dir)
            photo_site = await stack.enter_async_context(
                _site(_photo_server(photo_dir), "127.0.0.1", 0)
            )
            photos_url = f"{photo_site}{PHOTO_ROUTE}"
        app = create_app(settings.api, embedder=embedder, store=store)
        # One process, one /readyz: the worker's state (a crashed worker is not ready) and its
        # metrics are the stack's too.
        health = WorkerHealth(HealthPolicy.from_settings(settings.worker.stream))
        worker_metrics = WorkerMetrics()
        include_worker(app, health, worker_metrics)
        url = await stack.enter_async_context(_site(app, settings.api.host, settings.api.port))
        await stack.enter_async_context(
            _worker(settings.worker, embedder, store, health, worker_metrics)
        )
        print(f"search: {url}/", file=out, flush=True)
        if own_broker is not None:
            print(f"broker: {bootstrap}", file=out, flush=True)
        log.info("dev_stack_ready", search=f"{url}/", broker=bootstrap, data=str(options.data))
        if catalog is not None and photos_url is not None:
            topic = settings.worker.broker.topic
            demo = asyncio.ensure_future(run_demo(catalog, photos_url, bootstrap, topic, store))
            demo.add_done_callback(_log_demo_failure)
            stack.push_async_callback(_cancel, demo)
        await asyncio.Event().wait()


async def _cancel(task: asyncio.Future[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def serve_until_signalled(options: DevOptions) -> int:
    """Run the stack until SIGINT or SIGTERM; a second signal while stopping is ignored."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(run_dev(options))
    signalled: list[float] = []

    def on_signal(sig: signal.Signals) -> None:
        if signalled:
            log.warning("already_stopping", signal=sig.name)
            return
        signalled.append(time.monotonic())
        log.info("stopping", signal=sig.name)
        task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await task
    except asyncio.CancelledError:
        if not signalled:
            raise
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    log.info("stopped", shutdown_s=round(time.monotonic() - signalled[0], 2) if signalled else None)
    return 0


def run(options: DevOptions) -> int:
    """The blocking entry point of `lookalike dev`."""
    return asyncio.run(serve_until_signalled(options))
