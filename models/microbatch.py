"""Micro-batching: photos of concurrent callers are embedded together, one pass per batch."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

EmbedFn = Callable[[Sequence[Image.Image]], Awaitable[np.ndarray]]
# Told of every pass: how many photos it embedded and how long it took.
PassObserver = Callable[[int, float], None]


class BatcherClosedError(Exception):
    """The batcher is shutting down and takes no more work."""


@dataclass
class _Job:
    image: Image.Image
    future: asyncio.Future[np.ndarray] = field(repr=False)


class MicroBatcher:
    """Collects photos into batches and runs one embed call per batch, up to `concurrency`
    batches at once (the embedder's streams).

    Latency at low load matters as much as throughput at high load, so the batcher never waits
    for company when nobody is coming: an idle batcher starts a pass on the first photo at once.
    While a pass runs, arriving photos queue up and form the next batch. It waits (at most
    max_wait_s) only for photos that callers have announced (they are being decoded right now)."""

    def __init__(
        self,
        embed: EmbedFn,
        max_batch: int,
        max_wait_s: float,
        on_pass: PassObserver | None = None,
        concurrency: int = 1,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._embed = embed
        self._max_batch = max_batch
        self._max_wait_s = max_wait_s
        self._on_pass = on_pass
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._announced = 0
        self._task: asyncio.Task[None] | None = None
        self._slots = asyncio.Semaphore(concurrency)
        self._passes: set[asyncio.Task[None]] = set()
        self._closed = False

    def start(self) -> None:
        """Start the collecting loop on the running event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="micro-batcher")

    async def close(self) -> None:
        """Stop taking work; photos still queued fail with BatcherClosedError."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for running in list(self._passes):
            running.cancel()
        await asyncio.gather(*self._passes, return_exceptions=True)
        while not self._queue.empty():
            job = self._queue.get_nowait()
            if not job.future.done():
                job.future.set_exception(BatcherClosedError("the service is shutting down"))

    @contextlib.contextmanager
    def announced(self) -> Iterator[None]:
        """Mark a photo on its way (being read or decoded) so a forming batch may wait for it."""
        self._announced += 1
        try:
            yield
        finally:
            self._announced -= 1

    async def embed(self, image: Image.Image) -> np.ndarray:
        """The embedding of one photo, computed in a batch with whatever else is pending."""
        if self._closed or self._task is None:
            raise BatcherClosedError("the embedder is not running")
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Job(image, future))
        return await future

    async def _collect(self) -> list[_Job]:
        batch = [await self._queue.get()]
        deadline = time.monotonic() + self._max_wait_s
        while len(batch) < self._max_batch:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - time.monotonic()
            if self._announced == 0 or remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        while True:
            # A batch forms while every stream is busy, and starts when one frees up.
            await self._slots.acquire()
            try:
                batch = await self._collect()
            except BaseException:
                self._slots.release()
                raise
            # A caller that gave up (client disconnected) needs no embedding.
            batch = [job for job in batch if not job.future.cancelled()]
            if not batch:
                self._slots.release()
                continue
            running = asyncio.get_running_loop().create_task(self._pass(batch))
            self._passes.add(running)
            running.add_done_callback(self._pass_done)

    def _pass_done(self, running: asyncio.Task[None]) -> None:
        self._passes.discard(running)
        self._slots.release()

    async def _pass(self, batch: list[_Job]) -> None:
        start = time.perf_counter()
        try:
            vectors = await self._embed([job.image for job in batch])
        except asyncio.CancelledError:
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(BatcherClosedError("the service is shutting down"))
            raise
        except Exception as exc:
            log.exception("embedding a batch of %d failed", len(batch))
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        if self._on_pass is not None:
            self._on_pass(len(batch), time.perf_counter() - start)
        for job, vector in zip(batch, vectors, strict=True):
            if not job.future.done():
                job.future.set_result(vector)
