"""Decoding uploads on a thread pool of the app's own, never on the event loop."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from PIL import Image

from models.images import ImageLimits, decode_image
from query.errors import ApiError

# Preprocessing scales the shorter side up to the model's input size, so a 1 x 40000 strip would
# become gigabytes of pixels; no product photo is that thin.
MAX_ASPECT_RATIO = 20.0


def _decode(data: bytes, limits: ImageLimits, min_side: int | None) -> Image.Image:
    image = decode_image(data, limits, min_side)
    width, height = image.size
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise ApiError(
            422,
            "extreme_aspect_ratio",
            f"the image is {width}x{height}; sides may differ by at most {MAX_ASPECT_RATIO:g}x",
        )
    return image


class Decoder:
    """Decodes photos with the image limits and the smallest size the model still needs."""

    def __init__(self, limits: ImageLimits, min_side: int | None, workers: int) -> None:
        self._limits = limits
        self._min_side = min_side
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode")

    async def decode(self, data: bytes) -> Image.Image:
        """An RGB image; an ImageError subclass or a 422 ApiError for anything unacceptable."""
        call = partial(_decode, data, self._limits, self._min_side)
        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
