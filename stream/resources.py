"""The worker's heavy resources (model, store, fetcher, decode threads), built once per process."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import structlog

from models.embedder import AsyncEmbedder
from models.fetch import ImageFetcher
from models.images import ImageLimits
from models.network import Preprocessing
from models.store.types import VectorStore
from stream.indexer import AsyncEmbedderLike, DeadLetters, Fetcher, ListingIndexer, VersionGuard
from stream.metrics import WorkerMetrics
from stream.settings import WorkerSettings

log = structlog.get_logger("stream.resources")


@dataclass
class WorkerResources:
    """What the indexer runs on. `owned` resources are closed by the worker when it stops; tests
    and the embedded stack may pass shared ones that they close themselves."""

    settings: WorkerSettings
    embedder: AsyncEmbedderLike
    store: VectorStore
    fetcher: Fetcher
    # Photos are decoded and fitted to the model's input in the decode threads.
    preprocessing: Preprocessing
    metrics: WorkerMetrics = field(default_factory=WorkerMetrics)
    owned: bool = True
    decode_pool: ThreadPoolExecutor | None = None

    @classmethod
    async def open(
        cls, settings: WorkerSettings, metrics: WorkerMetrics | None = None
    ) -> WorkerResources:
        """Load the model (off the loop), then everything else around it (`around`)."""
        runner = await AsyncEmbedder.load(settings.model)
        await runner.warmup()
        return await cls.around(settings, runner, metrics=metrics)

    @classmethod
    async def around(
        cls,
        settings: WorkerSettings,
        runner: AsyncEmbedder,
        metrics: WorkerMetrics | None = None,
        owned: bool = True,
    ) -> WorkerResources:
        """Open the store and its collection for `runner`'s model and create the fetcher; with
        owned=False the caller, not the worker, closes them all (`close()`) when done."""
        from models.store.factory import open_store

        embedder = runner.embedder
        store = open_store(settings.store, embedder.model_id, embedder.dim)
        await store.ensure_collection()
        fetcher = ImageFetcher(settings.fetch, max_bytes=settings.images.max_image_bytes)
        log.info("worker_resources_ready", model_id=embedder.model_id, store=store.collection_name)
        return cls(
            settings=settings,
            embedder=runner,
            store=store,
            fetcher=fetcher,
            metrics=metrics or WorkerMetrics(),
            preprocessing=embedder.preprocessing,
            owned=owned,
        )

    def indexer(self, guard: VersionGuard, dead_letters: DeadLetters) -> ListingIndexer:
        if self.decode_pool is None:
            self.decode_pool = ThreadPoolExecutor(
                max_workers=self.settings.stream.decode_threads,
                thread_name_prefix="lookalike-decode",
            )
        return ListingIndexer(
            store=self.store,
            embedder=self.embedder,
            fetcher=self.fetcher,
            guard=guard,
            dead_letters=dead_letters,
            metrics=self.metrics,
            decode_pool=self.decode_pool,
            image_limits=ImageLimits.from_settings(self.settings.images),
            preprocessing=self.preprocessing,
            fetch_attempts=self.settings.fetch.fetch_retries + 1,
            store_retry_s=self.settings.stream.store_retry_s,
        )

    async def close(self) -> None:
        """Close what this process opened: fetcher session, store, inference and decode threads."""
        close_fetcher = getattr(self.fetcher, "close", None)
        if close_fetcher is not None:
            await close_fetcher()
        await self.store.close()
        close_embedder = getattr(self.embedder, "close", None)
        if close_embedder is not None:
            close_embedder()
        if self.decode_pool is not None:
            self.decode_pool.shutdown(wait=False, cancel_futures=True)
