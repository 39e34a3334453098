"""The worker's heavy resources (model, store, fetcher, decode threads), built once per process."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import structlog
from aiokafka.errors import KafkaError
from PIL import Image

from models.embedder import AsyncEmbedder
from models.fetch import ImageFetcher
from models.images import ImageLimits
from models.microbatch import MicroBatcher
from models.network import Preprocessing
from models.photos import PhotoPipeline
from models.store.lease import WriterLease
from models.store.types import StoreError, VectorStore
from stream.indexer import DeadLetters, IndexerPolicy, ListingIndexer, Retries
from stream.metrics import WorkerMetrics
from stream.persist import Persistence
from stream.settings import WorkerSettings

log = structlog.get_logger("stream.resources")


class AsyncEmbedderLike(Protocol):
    model_id: str
    dim: int
    streams: int

    async def embed(self, images: Sequence[Image.Image]) -> np.ndarray: ...


@dataclass
class WorkerResources:
    """What the indexer runs on. `owned` resources are closed by the worker when it stops; tests
    and the embedded stack may pass shared ones that they close themselves."""

    settings: WorkerSettings
    embedder: AsyncEmbedderLike
    store: VectorStore
    fetcher: ImageFetcher
    # Photos are decoded and fitted to the model's input in the decode threads.
    preprocessing: Preprocessing
    metrics: WorkerMetrics = field(default_factory=WorkerMetrics)
    owned: bool = True
    decode_pool: ThreadPoolExecutor | None = None
    batcher: MicroBatcher | None = None
    # Held while the indexer may write to an Edge index: `lookalike reindex` refuses meanwhile.
    lease: WriterLease | None = None

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

    def indexer(self, dead_letters: DeadLetters, retries: Retries) -> ListingIndexer:
        """The indexer over these resources; call it in the running loop (it starts a batcher)."""
        s = self.settings.stream
        if self.lease is None and self.settings.store.qdrant_url is None:
            self.lease = WriterLease(self.settings.store.index_path).hold()
        if self.decode_pool is None:
            self.decode_pool = ThreadPoolExecutor(
                max_workers=s.decode_threads, thread_name_prefix="lookalike-decode"
            )
        if self.batcher is None:
            # Photos of listings processed side by side share forward passes.
            self.batcher = MicroBatcher(
                self.embedder.embed,
                max_batch=self.settings.model.embed_batch_size,
                max_wait_s=0.0,
                on_pass=self.metrics.observe_pass,
                concurrency=self.embedder.streams,
            )
            self.batcher.start()
        photos = PhotoPipeline(
            self.fetcher,
            self.decode_pool,
            self.preprocessing,
            ImageLimits.from_settings(self.settings.images),
        )
        return ListingIndexer(
            store=self.store,
            embed=self.batcher.embed,
            model_id=self.embedder.model_id,
            photos=photos,
            dead_letters=dead_letters,
            retries=retries,
            metrics=self.metrics,
            persist=Persistence(
                infra_errors=(StoreError, KafkaError, OSError, TimeoutError),
                max_delay_s=s.infra_backoff_max_s,
            ),
            policy=IndexerPolicy(
                fetch_deadline_s=s.fetch_deadline_s,
                max_retries=s.max_retries,
                retry_delay_s=s.retry_delay_s,
                duplicate_threshold=self.settings.store.duplicate_threshold,
            ),
        )

    async def stop(self) -> None:
        """Stop what `indexer()` started (the batcher, the writer lease); the rest stays open."""
        if self.batcher is not None:
            await self.batcher.close()
            self.batcher = None
        if self.lease is not None:
            self.lease.release()
            self.lease = None

    async def close(self) -> None:
        """Close everything: batcher, fetcher session, store, inference and decode threads."""
        await self.stop()
        await self.fetcher.close()
        await self.store.close()
        close_embedder = getattr(self.embedder, "close", None)
        if close_embedder is not None:
            close_embedder()
        if self.decode_pool is not None:
            self.decode_pool.shutdown(wait=False, cancel_futures=True)
