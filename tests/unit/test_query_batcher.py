"""The micro-batcher: no wait when idle, concurrent photos share a pass, results stay in order."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import numpy as np
import pytest
from PIL import Image

from models.microbatch import BatcherClosedError, MicroBatcher
from query.metrics import ApiMetrics


class ColourEmbed:
    """A stand-in forward pass: each photo's vector is its colour; records every batch size."""

    def __init__(self, pass_s: float = 0.0, fail_on: int | None = None) -> None:
        self.pass_s = pass_s
        self.fail_on = fail_on
        self.batches: list[int] = []

    async def __call__(self, images: Sequence[Image.Image]) -> np.ndarray:
        self.batches.append(len(images))
        await asyncio.sleep(self.pass_s)
        if self.fail_on is not None and len(self.batches) == self.fail_on:
            raise RuntimeError("forward pass failed")
        return np.array([img.getpixel((0, 0)) for img in images], dtype=np.float32)


def swatch(i: int) -> Image.Image:
    return Image.new("RGB", (4, 4), (i, 255 - i, i % 7))


async def test_an_idle_batcher_does_not_wait_for_company() -> None:
    embed = ColourEmbed()
    batcher = MicroBatcher(embed, max_batch=8, max_wait_s=2.0)
    batcher.start()
    try:
        start = time.perf_counter()
        vector = await batcher.embed(swatch(3))
        elapsed = time.perf_counter() - start
    finally:
        await batcher.close()
    assert vector.tolist() == [3, 252, 3]
    assert elapsed < 1.0, "a lone photo waited for the batch window"
    assert embed.batches == [1]


async def test_concurrent_photos_share_forward_passes_and_keep_their_own_results() -> None:
    embed = ColourEmbed(pass_s=0.05)
    metrics = ApiMetrics()
    batcher = MicroBatcher(embed, max_batch=32, max_wait_s=0.0, on_pass=metrics.observe_pass)
    batcher.start()
    try:
        vectors = await asyncio.gather(*(batcher.embed(swatch(i)) for i in range(12)))
    finally:
        await batcher.close()
    assert [v.tolist() for v in vectors] == [[i, 255 - i, i % 7] for i in range(12)]
    assert sum(embed.batches) == 12
    assert len(embed.batches) < 12
    assert max(embed.batches) > 1
    count = metrics.registry.get_sample_value("lookalike_embed_batch_size_count")
    total = metrics.registry.get_sample_value("lookalike_embed_batch_size_sum")
    assert count == len(embed.batches)
    assert total == 12


async def test_batches_never_exceed_the_maximum() -> None:
    embed = ColourEmbed(pass_s=0.01)
    batcher = MicroBatcher(embed, max_batch=3, max_wait_s=0.0)
    batcher.start()
    try:
        vectors = await asyncio.gather(*(batcher.embed(swatch(i)) for i in range(10)))
    finally:
        await batcher.close()
    assert len(vectors) == 10
    assert max(embed.batches) <= 3
    assert sum(embed.batches) == 10


async def test_a_forming_batch_waits_for_an_announced_photo() -> None:
    embed = ColourEmbed()
    batcher = MicroBatcher(embed, max_batch=8, max_wait_s=1.0)
    batcher.start()

    async def late() -> np.ndarray:
        with batcher.announced():
            await asyncio.sleep(0.05)  # still being decoded when the first photo is queued
        return await batcher.embed(swatch(2))

    try:
        task = asyncio.create_task(late())
        await asyncio.sleep(0)  # the late photo is announced before the first one arrives
        first = await batcher.embed(swatch(1))
        second = await task
    finally:
        await batcher.close()
    assert first.tolist()[0] == 1 and second.tolist()[0] == 2
    assert embed.batches == [2]


async def test_unannounced_arrivals_do_not_hold_a_batch_back() -> None:
    embed = ColourEmbed()
    batcher = MicroBatcher(embed, max_batch=8, max_wait_s=1.0)
    batcher.start()
    try:
        start = time.perf_counter()
        await batcher.embed(swatch(1))
        await batcher.embed(swatch(2))
        elapsed = time.perf_counter() - start
    finally:
        await batcher.close()
    assert embed.batches == [1, 1]
    assert elapsed < 1.0


async def test_a_failed_pass_fails_its_callers_and_the_next_pass_still_runs() -> None:
    embed = ColourEmbed(pass_s=0.02, fail_on=1)
    batcher = MicroBatcher(embed, max_batch=8, max_wait_s=0.0)
    batcher.start()
    try:
        failed = await asyncio.gather(batcher.embed(swatch(1)), return_exceptions=True)
        ok = await batcher.embed(swatch(5))
    finally:
        await batcher.close()
    assert isinstance(failed[0], RuntimeError)
    assert ok.tolist()[0] == 5


async def test_closing_fails_waiting_callers_and_refuses_new_ones() -> None:
    embed = ColourEmbed(pass_s=0.2)
    batcher = MicroBatcher(embed, max_batch=1, max_wait_s=0.0)
    batcher.start()
    first = asyncio.create_task(batcher.embed(swatch(1)))
    queued = asyncio.create_task(batcher.embed(swatch(2)))
    await asyncio.sleep(0.05)
    await batcher.close()
    results = await asyncio.gather(first, queued, return_exceptions=True)
    assert all(isinstance(r, BatcherClosedError) for r in results)
    with pytest.raises(BatcherClosedError):
        await batcher.embed(swatch(3))


class OverlapEmbed(ColourEmbed):
    """Records how many passes were in flight at once."""

    def __init__(self, pass_s: float) -> None:
        super().__init__(pass_s)
        self.running = 0
        self.most = 0

    async def __call__(self, images: Sequence[Image.Image]) -> np.ndarray:
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            return await super().__call__(images)
        finally:
            self.running -= 1


@pytest.mark.parametrize("concurrency", [1, 2])
async def test_passes_in_flight_never_exceed_the_streams(concurrency: int) -> None:
    embed = OverlapEmbed(pass_s=0.05)
    batcher = MicroBatcher(embed, max_batch=2, max_wait_s=0.0, concurrency=concurrency)
    batcher.start()
    try:
        vectors = await asyncio.gather(*(batcher.embed(swatch(i)) for i in range(10)))
    finally:
        await batcher.close()
    assert [v.tolist()[0] for v in vectors] == list(range(10))
    assert embed.most == concurrency
    assert sum(embed.batches) == 10 and max(embed.batches) <= 2


async def test_closing_fails_the_photos_of_passes_in_flight() -> None:
    embed = ColourEmbed(pass_s=5.0)
    batcher = MicroBatcher(embed, max_batch=1, max_wait_s=0.0, concurrency=2)
    batcher.start()
    pending = [asyncio.ensure_future(batcher.embed(swatch(i))) for i in range(3)]
    await asyncio.sleep(0.05)  # two passes started, the third photo queued
    await batcher.close()
    results = await asyncio.gather(*pending, return_exceptions=True)
    assert all(isinstance(r, BatcherClosedError) for r in results), results
    assert embed.batches == [1, 1]
