"""Batched, device-aware embedding of decoded photos, and its off-the-event-loop async runner."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image
from torch.jit._trace import TracerWarning

from models.network import EmbeddingNet, load_model
from models.settings import ModelSettings

__all__ = ["AsyncEmbedder", "Embedder", "resolve_device", "stream_plan"]

T = TypeVar("T")
log = logging.getLogger(__name__)

# Measured on 2 CPU cores (bench.embed and interleaved runs): channels_last was as fast as the
# contiguous layout at batch 1-4 (~60 images/s) and faster from batch 8 up (batch 32: 42 vs 24),
# so the CPU uses it too.
CPU_CHANNELS_LAST = True


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
    """Owns the model on one device; embeds any number of photos of any sizes, synchronously.

    On CUDA the model runs in half precision with channels_last; on the CPU in float32. Output is
    always float32, L2-normalised, one row per photo in input order.

    With `torchscript`, passes run a frozen TorchScript trace of the model: BatchNorm folded into
    the convolutions and no Python between operators. On the 2-core CPU one image took 8.3–8.7 ms
    frozen against 12–18 ms eager, same outputs within 1e-6. The trace fixes the input size,
    which Preprocessing fixes anyway; `model` stays the eager network (ids, hooks, training).
    """

    def __init__(
        self,
        model: EmbeddingNet,
        device: torch.device | str = "cpu",
        max_batch: int = 8,
        channels_last: bool | None = None,
        torchscript: bool = False,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.device = torch.device(device)
        self.max_batch = max_batch
        self.dtype, default_channels_last = self.precision(self.device)
        self.channels_last = default_channels_last if channels_last is None else channels_last
        self.memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        model = model.eval().to(device=self.device, dtype=self.dtype)
        if self.channels_last:
            # Module.to accepts memory_format at runtime; torch's overload stubs leave it out.
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.model = model
        self.model_id = model.model_id
        self.dim = model.dim
        self.preprocessing = model.preprocessing
        self.torchscript = torchscript
        self._forward: Callable[[torch.Tensor], torch.Tensor] = (
            self._frozen(model) if torchscript else model
        )

    def _frozen(self, model: EmbeddingNet) -> Callable[[torch.Tensor], torch.Tensor]:
        size = self.preprocessing.size
        example = torch.zeros((1, 3, size, size), device=self.device, dtype=self.dtype)
        example = example.contiguous(memory_format=self.memory_format)
        with warnings.catch_warnings(), torch.inference_mode():
            # SameConv2d's padding is computed from the input size: the trace records it for the
            # one size Preprocessing produces, which is what the warning is about.
            warnings.simplefilter("ignore", TracerWarning)
            # torch 2.13 marks TorchScript deprecated but ships it. Chosen over torch.compile,
            # which needs a C++ toolchain and about a minute of compiling at every start here.
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                traced = torch.jit.trace(  # type: ignore[no-untyped-call]
                    model, example, check_trace=False
                )
                frozen: Callable[[torch.Tensor], torch.Tensor] = torch.jit.freeze(traced)
            except (AttributeError, RuntimeError) as exc:
                # A torch without TorchScript still embeds, only slower.
                log.warning("TorchScript unavailable (%s): running the eager model", exc)
                self.torchscript = False
                return model
            return frozen

    @staticmethod
    def precision(device: torch.device) -> tuple[torch.dtype, bool]:
        """(dtype, channels_last) the model runs with on `device`."""
        if device.type == "cuda":
            return torch.float16, True
        return torch.float32, CPU_CHANNELS_LAST

    @classmethod
    def from_settings(cls, s: ModelSettings) -> Embedder:
        """The configured model; sets the calling thread's torch threads when configured."""
        if s.torch_threads is not None:
            torch.set_num_threads(s.torch_threads)
        model = load_model(s.model_name, s.model_checkpoint)
        return cls(
            model,
            resolve_device(s.device),
            max_batch=s.embed_batch_size,
            torchscript=s.torchscript,
        )

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(n, dim) float32 L2-normalised embeddings, in chunks of at most max_batch photos."""
        out = np.empty((len(images), self.dim), dtype=np.float32)
        for start in range(0, len(images), self.max_batch):
            chunk = images[start : start + self.max_batch]
            out[start : start + len(chunk)] = self.embed_tensor(self.preprocessing.to_tensor(chunk))
        return out

    def embed_tensor(self, batch: torch.Tensor) -> np.ndarray:
        """Embeddings of one already preprocessed (N, 3, size, size) float32 batch."""
        if batch.device.type == "cpu" and self.device.type == "cuda":
            batch = batch.pin_memory()
        with torch.inference_mode():
            x = batch.to(
                self.device, dtype=self.dtype, memory_format=self.memory_format, non_blocking=True
            )
            z = self._forward(x)
            result: np.ndarray = z.to("cpu", dtype=torch.float32).numpy()
        return result

    def warmup(self) -> None:
        """One forward pass, so the first real request pays no allocation or kernel-choice cost."""
        size = self.preprocessing.size
        self.embed_tensor(torch.zeros((1, 3, size, size), dtype=torch.float32))


def stream_plan(settings: ModelSettings, device: torch.device) -> tuple[int, int | None]:
    """(forward passes at once, torch threads of each; None leaves torch's default)."""
    if device.type == "cuda":
        return 1, settings.torch_threads
    cpus = os.cpu_count() or 1
    streams = settings.embed_streams or (2 if cpus >= 2 else 1)
    return streams, settings.torch_threads or max(1, cpus // streams)


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
