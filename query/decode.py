"""Decoding uploads on a thread pool of the app's own, never on the event loop."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from PIL import Image

from models.images import ImageLimits
from models.network import Preprocessing


class Decoder:
    """Decodes photos within the image limits and fits them to the model's input, in threads,
    so the inference thread only stacks and scales them."""

    def __init__(self, limits: ImageLimits, preprocessing: Preprocessing, workers: int) -> None:
        self._limits = limits
        self._preprocessing = preprocessing
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode")

    async def decode(self, data: bytes) -> Image.Image:
        """The model-sized RGB image; an ImageError subclass for anything unacceptable."""
        call = partial(self._preprocessing.load, data, self._limits)
        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
