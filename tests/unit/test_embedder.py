"""Embedder batching and devices, and AsyncEmbedder's single inference thread, on the real model."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.embedder import AsyncEmbedder, Embedder, resolve_device, stream_plan
from models.network import EmbeddingNet, export_checkpoint, load_model
from models.settings import ModelSettings
from tests.photos import photo

pytestmark = pytest.mark.slow

NAMES = ["chelsea", "coffee", "astronaut", "rocket", "motorcycle", "china", "flower"]


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder(load_model(), "cpu", max_batch=3)


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    # Mixed sizes and modes, as photos arrive: 451x300, 600x400, 512x512, ..., plus a greyscale.
    return [photo(n) for n in NAMES] + [photo("coffee").convert("L").resize((333, 777))]


@pytest.fixture
async def async_embedder(embedder: Embedder) -> AsyncIterator[AsyncEmbedder]:
    runner = AsyncEmbedder(embedder)
    yield runner
    runner.close()


@pytest.fixture
def forward_threads(embedder: Embedder) -> Iterator[list[int]]:
    """The thread id of every forward pass the shared model runs during the test."""
    seen: list[int] = []
    handle = embedder.model.register_forward_pre_hook(
        lambda _module, _args: seen.append(threading.get_ident())
    )
    yield seen
    handle.remove()


def test_one_call_with_mixed_sizes_equals_one_by_one(
    embedder: Embedder, images: list[Image.Image]
) -> None:
    assert len({im.size for im in images}) > 3
    together = embedder.embed(images)
    one_by_one = np.concatenate([embedder.embed([im]) for im in images])
    assert together.shape == (len(images), 1280)
    assert together.dtype == np.float32
    np.testing.assert_allclose(together, one_by_one, atol=2e-4)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    # Distinct photos really get distinct vectors, in input order.
    sims = together @ together.T
    assert np.all(np.argmax(sims, axis=1) == np.arange(len(images)))


def test_chunks_by_max_batch(
    embedder: Embedder, images: list[Image.Image], forward_threads: list[int]
) -> None:
    embedder.embed(images)
    # 8 photos with max_batch 3 -> batches of 3, 3 and 2.
    assert len(forward_threads) == 3


def test_empty_input_gives_an_empty_matrix(embedder: Embedder) -> None:
    out = embedder.embed([])
    assert out.shape == (0, 1280)
    assert out.dtype == np.float32


def test_cpu_runs_float32(embedder: Embedder) -> None:
    assert embedder.device == torch.device("cpu")
    assert next(embedder.model.parameters()).dtype == torch.float32


def test_from_settings_honours_threads_and_batch_size(
    monkeypatch: pytest.MonkeyPatch, images: list[Image.Image]
) -> None:
    before = torch.get_num_threads()
    monkeypatch.setenv("LOOKALIKE_EMBED_BATCH_SIZE", "5")
    monkeypatch.setenv("LOOKALIKE_TORCH_THREADS", "1")
    monkeypatch.setenv("LOOKALIKE_DEVICE", "cpu")
    try:
        built = Embedder.from_settings(ModelSettings())
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert built.max_batch == 5
    assert built.device == torch.device("cpu")
    assert built.model_id.startswith("efficientnet-lite0-")
    assert built.embed(images[:2]).shape == (2, 1280)


def test_from_settings_loads_a_fine_tuned_checkpoint(tmp_path: Path) -> None:
    base = load_model()
    torch.manual_seed(0)
    tuned = EmbeddingNet(base.name, base.backbone, base.model_id, projection_dim=64).eval()
    model_id = export_checkpoint(tuned, tmp_path / "tuned.pt")
    built = Embedder.from_settings(
        ModelSettings(model_checkpoint=tmp_path / "tuned.pt", device="cpu")
    )
    assert built.model_id == model_id
    assert built.dim == 64
    out = built.embed([photo("rocket")])
    assert out.shape == (1, 64)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_resolve_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda") == torch.device("cuda")
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(RuntimeError, match="CUDA"):
        resolve_device("cuda")
    with pytest.raises(ValueError):
        resolve_device("mps")
    with pytest.raises(ValueError):
        resolve_device("quantum")


def test_precision_per_device() -> None:
    assert Embedder.precision(torch.device("cuda")) == (torch.float16, True)
    assert Embedder.precision(torch.device("cpu"))[0] == torch.float32


async def test_async_embed_matches_sync(
    async_embedder: AsyncEmbedder, embedder: Embedder, images: list[Image.Image]
) -> None:
    out = await async_embedder.embed(images[:4])
    np.testing.assert_array_equal(out, embedder.embed(images[:4]))
    assert async_embedder.dim == 1280
    assert async_embedder.model_id == embedder.model_id


async def test_async_empty_input_runs_no_inference(
    async_embedder: AsyncEmbedder, forward_threads: list[int]
) -> None:
    out = await async_embedder.embed([])
    assert out.shape == (0, 1280)
    assert out.dtype == np.float32
    assert forward_threads == []


async def test_async_embed_does_not_block_the_loop(
    async_embedder: AsyncEmbedder, images: list[Image.Image]
) -> None:
    ticks: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.02)
    start = time.perf_counter()
    await async_embedder.embed(images * 3)
    elapsed = time.perf_counter() - start
    done.set()
    await task
    during = [t for t in ticks if start <= t <= start + elapsed]
    gaps = np.diff(ticks)
    # 24 photos take well over 10 ticks; a blocked loop would tick once at most meanwhile.
    assert elapsed > 0.2
    assert len(during) >= 10
    assert gaps.max() < elapsed / 2


async def test_all_inference_runs_on_one_dedicated_thread(
    async_embedder: AsyncEmbedder, images: list[Image.Image], forward_threads: list[int]
) -> None:
    results = await asyncio.gather(*(async_embedder.embed([im]) for im in images))
    assert len(results) == len(images)
    assert len(forward_threads) == len(images)
    assert len(set(forward_threads)) == 1
    assert forward_threads[0] != threading.get_ident()
    # Concurrent callers each get their own photo's embedding back.
    for im, got in zip(images, results, strict=True):
        np.testing.assert_allclose(got, async_embedder.embedder.embed([im]), atol=2e-4)


async def test_closed_runner_refuses_work(embedder: Embedder) -> None:
    runner = AsyncEmbedder(embedder)
    runner.close()
    with pytest.raises(RuntimeError):
        await runner.embed([photo("chelsea")])


async def test_load_builds_the_model_on_the_thread_that_runs_every_pass(
    monkeypatch: pytest.MonkeyPatch, images: list[Image.Image]
) -> None:
    loaded_on: list[int] = []
    real = Embedder.from_settings

    def recording(settings: ModelSettings) -> Embedder:
        loaded_on.append(threading.get_ident())
        return real(settings)

    monkeypatch.setattr(Embedder, "from_settings", staticmethod(recording))
    # Eager, so the forward hook sees every pass (a TorchScript trace runs no Python hooks).
    runner = await AsyncEmbedder.load(
        ModelSettings(device="cpu", runtime="torch", torchscript=False, embed_streams=1)
    )
    try:
        seen: list[int] = []
        runner.embedder.model.register_forward_pre_hook(
            lambda _module, _args: seen.append(threading.get_ident())
        )
        await asyncio.gather(*(runner.embed([im]) for im in images[:3]))
        await runner.warmup()
        ran_on = await runner.run(threading.get_ident)
        # Torch work on a second thread slows every later pass (AsyncEmbedder's docstring):
        # loading, passes, warm-up and any other call share one thread, never the loop's.
        assert set(seen) == set(loaded_on) == {ran_on}
        assert ran_on != threading.get_ident()
        assert len(seen) == 4
    finally:
        runner.close()


def test_the_torchscript_trace_embeds_like_the_eager_model(
    embedder: Embedder, images: list[Image.Image]
) -> None:
    frozen = Embedder.from_settings(
        ModelSettings(device="cpu", runtime="torch", embed_batch_size=3)
    )
    assert frozen.torchscript and not embedder.torchscript
    assert frozen.model_id == embedder.model_id
    # Batches of 3, 3 and 2 through the trace (made with a batch of 1): any batch size works.
    np.testing.assert_allclose(frozen.embed(images), embedder.embed(images), atol=1e-5)


async def test_two_streams_embed_side_by_side_on_threads_of_one_torch_thread(
    embedder: Embedder, images: list[Image.Image]
) -> None:
    runner = await AsyncEmbedder.load(
        ModelSettings(
            device="cpu", runtime="torch", torchscript=False, embed_streams=2, embed_batch_size=2
        )
    )
    try:
        assert runner.streams == 2
        seen: list[int] = []
        runner.embedder.model.register_forward_pre_hook(
            lambda _module, _args: seen.append(threading.get_ident())
        )
        # 8 photos in chunks of 2: four passes spread over both streams, results in input order.
        got = await runner.embed(images)
        np.testing.assert_allclose(got, embedder.embed(images), atol=2e-4)
        assert len(seen) == 4 and len(set(seen)) == 2
        assert threading.get_ident() not in seen
        # Every stream's thread runs torch on 1 of the 2 CPUs' threads, set before its first op.
        threads = await asyncio.gather(*(runner.run(_slow_thread_count) for _ in range(2)))
        assert sorted(ident for ident, _ in threads) == sorted(set(seen))
        assert {count for _, count in threads} == {1}
    finally:
        runner.close()


def _slow_thread_count() -> tuple[int, int]:
    time.sleep(0.05)  # long enough that the two calls land on both threads
    return threading.get_ident(), torch.get_num_threads()


def test_the_stream_plan_shares_the_cpus_out() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    cpus = os.cpu_count() or 1
    assert stream_plan(ModelSettings(embed_streams=1), cpu) == (1, cpus)
    assert stream_plan(ModelSettings(embed_streams=2, torch_threads=3), cpu) == (2, 3)
    assert stream_plan(ModelSettings(embed_streams=4), cuda) == (1, None)
