"""Batched, device-aware embedding of decoded photos, and its off-the-event-loop async runner."""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image

from models.network import EmbeddingNet, load_model
from models.runtime import Backend, Plan, choose, open_backend
from models.runtime.base import Precision, Runtime
from models.runtime.torch_backend import TorchBackend, default_precision
from models.settings import ModelSettings

__all__ = ["AsyncEmbedder", "Embedder", "plan", "resolve_device", "stream_plan"]

T = TypeVar("T")


def resolve_device(setting: str) -> torch.device:
    """The torch device for a setting: auto is cuda when a GPU is visible, else cpu."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(setting)
    except RuntimeError as e:
        raise ValueError(f"unknown device {setting!r}; use auto, cpu or cuda") from e
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {setting!r}; use auto, cpu or cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {setting!r} was asked for but torch sees no CUDA device")
    return device


class Embedder:
    """Owns the model and the backend that runs it; embeds any number of photos of any sizes,
    synchronously. Output is always float32, L2-normalised, one row per photo in input order.

    Built directly, it runs torch: on CUDA in half precision with channels_last, on the CPU in
    float32, with `torchscript` a frozen trace (models.runtime.torch_backend). `from_settings`
    plans the runtime (OpenVINO on a CPU by default) and passes its `backend` in. `model` stays
    the eager network either way (ids, hooks, training).
    """

    def __init__(
        self,
        model: EmbeddingNet,
        device: torch.device | str = "cpu",
        max_batch: int = 8,
        channels_last: bool | None = None,
        torchscript: bool = False,
        backend: Backend | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.device = torch.device(device)
        self.max_batch = max_batch
        self.backend: Backend = backend or TorchBackend(
            model, self.device, channels_last=channels_last, torchscript=torchscript
        )
        self.model = model
        self.model_id = model.model_id
        self.dim = model.dim
        self.preprocessing = model.preprocessing

    @property
    def runtime(self) -> Runtime:
        return self.backend.runtime

    @property
    def inference_precision(self) -> Precision:
        return self.backend.precision

    @property
    def torchscript(self) -> bool:
        """Whether passes run a frozen TorchScript trace (torch backend only)."""
        return isinstance(self.backend, TorchBackend) and self.backend.torchscript

    @staticmethod
    def precision(device: torch.device) -> tuple[torch.dtype, bool]:
        """(dtype, channels_last) the torch backend runs with on `device` by default."""
        return default_precision(device)

    @classmethod
    def from_settings(cls, s: ModelSettings) -> Embedder:
        """The configured model on the planned runtime (torch when OpenVINO cannot serve); sets
        the calling thread's torch threads when configured."""
        if s.torch_threads is not None:
            torch.set_num_threads(s.torch_threads)
        model = load_model(s.model_name, s.model_checkpoint)
        device = resolve_device(s.device)
        backend = open_backend(
            model, device, plan(s, device), s.model_cache_dir, torchscript=s.torchscript
        )
        return cls(model, device, max_batch=s.embed_batch_size, backend=backend)

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(n, dim) float32 L2-normalised embeddings, in chunks of at most max_batch photos."""
        out = np.empty((len(images), self.dim), dtype=np.float32)
        for start in range(0, len(images), self.max_batch):
            chunk = images[start : start + self.max_batch]
            out[start : start + len(chunk)] = self.embed_tensor(self.preprocessing.to_tensor(chunk))
        return out

    def embed_tensor(self, batch: torch.Tensor) -> np.ndarray:
        """Embeddings of one already preprocessed (N, 3, size, size) float32 batch."""
        return self.backend.infer(batch)

    def warmup(self) -> None:
        """One forward pass, so the first real request pays no allocation or kernel-choice cost."""
        size = self.preprocessing.size
        self.embed_tensor(torch.zeros((1, 3, size, size), dtype=torch.float32))


def plan(settings: ModelSettings, device: torch.device) -> Plan:
    """The runtime, precision, streams and threads per stream for `settings` on `device`."""
    runtime, precision = choose(settings.runtime, settings.precision, device)
    if device.type == "cuda":
        return Plan(runtime, precision, 1, settings.torch_threads)
    cpus = os.cpu_count() or 1
    streams = settings.embed_streams or (2 if cpus >= 2 else 1)
    return Plan(runtime, precision, streams, settings.torch_threads or max(1, cpus // streams))


def stream_plan(settings: ModelSettings, device: torch.device) -> tuple[int, int | None]:
    """(forward passes at once, CPU threads of each; None leaves the runtime's default)."""
    p = plan(settings, device)
    return p.streams, p.threads


class AsyncEmbedder:
    """Runs every inference of one Embedder off the event loop, on its own threads: `streams`
    of them, each running one forward pass at a time (one by default; `load` plans more on a
    multi-core CPU).

    Load with `AsyncEmbedder.load(settings)`, which builds the model on one of those threads and
    gives every one of them the same torch thread count before its first operation. Measured on
    the 2-core machine (batch 1): once torch had run parallel work on a second thread with its
    default 2 threads (loading the weights there is enough), every forward pass took ~31 ms
    instead of ~16 ms, whichever thread ran it; OMP_WAIT_POLICY, GOMP_SPINCOUNT, OMP_PROC_BIND
    and set_num_threads afterwards changed nothing. Two streams of one torch thread each embedded
    110-114 images/s where one stream of two threads did 79-99, so that is the CPU default.

    Under OpenVINO each stream is one of its CPU streams with an infer request of its own (the
    torch threads then only preprocess). The plan held there too: 2 streams of 1 thread embedded
    84 images/s at batch 1 where 1 stream of 2 threads did 26 (fp32, both interleaved in one
    process, median of 5, on the loaded 2-core machine).
    """

    def __init__(
        self,
        embedder: Embedder,
        executor: ThreadPoolExecutor | None = None,
        streams: int = 1,
    ) -> None:
        self.embedder = embedder
        self.model_id = embedder.model_id
        self.dim = embedder.dim
        self.streams = streams
        self._executor = executor or ThreadPoolExecutor(
            max_workers=streams, thread_name_prefix="lookalike-embed"
        )

    @classmethod
    async def load(cls, settings: ModelSettings) -> AsyncEmbedder:
        """The configured model, loaded on one of the threads that will run all of its passes."""
        streams, threads = stream_plan(settings, resolve_device(settings.device))

        def configure_thread() -> None:
            if threads is not None:
                torch.set_num_threads(threads)

        executor = ThreadPoolExecutor(
            max_workers=streams, thread_name_prefix="lookalike-embed", initializer=configure_thread
        )
        loop = asyncio.get_running_loop()
        try:
            embedder = await loop.run_in_executor(executor, Embedder.from_settings, settings)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(embedder, executor, streams)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Any torch work (benchmarks, checks) on one of the model's threads, queued in order."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args))

    async def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Embeddings in input order; with several streams, chunks of max_batch run side by side."""
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        step = self.embedder.max_batch
        if self.streams == 1 or len(images) <= step:
            return await self.run(self.embedder.embed, list(images))
        chunks = [list(images[i : i + step]) for i in range(0, len(images), step)]
        parts = await asyncio.gather(*(self.run(self.embedder.embed, c) for c in chunks))
        return np.concatenate(parts)

    async def warmup(self) -> None:
        """A pass on every stream's thread, so no first request pays for a cold one."""
        await asyncio.gather(*(self.run(self.embedder.warmup) for _ in range(self.streams)))

    def close(self) -> None:
        """Stop taking work; queued calls are cancelled, those in flight finish on their threads."""
        self._executor.shutdown(wait=False, cancel_futures=True)
