"""One photo pipeline for every caller: fetch, content-hash and decode, decoding on a pool."""

from __future__ import annotations

import asyncio
from collections.abc import Container
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial
from typing import Protocol

from PIL import Image

from models.images import (
    Crop,
    ImageLimits,
    ImageProbe,
    content_hash,
    decode_fitted,
    probe_image,
)
from models.network import Preprocessing

# Below this, sha256 takes about a millisecond: cheaper on the loop than a hop to a pool that
# may be busy decoding. Above it (up to the 15 MB cap, ~30 ms) it would stall the loop.
_INLINE_HASH_BYTES = 1024 * 1024


@dataclass(frozen=True)
class LoadedPhoto:
    """One photo's bytes hashed and, unless the hash was already known, decoded and fitted."""

    url: str | None
    # models.images.content_hash of the bytes as fetched or given.
    hash: str
    # None when the hash was in `known`: the caller already holds what the image would give.
    image: Image.Image | None


class PhotoFetcher(Protocol):
    """What fetches a photo's bytes; models.fetch.ImageFetcher, raising FetchError."""

    async def fetch(self, url: str) -> bytes: ...


class PhotoPipeline:
    """Fetch, hash and decode photos; decoding runs on `pool` (threads or processes), never on
    the event loop.

    Header probes run on `probe_pool` (default: `pool`): one of their own lets a caller price a
    photo while every decode thread is busy. The pools belong to the caller, who shuts them
    down; so does the fetcher. Without a fetcher only bytes can be loaded.
    """

    def __init__(
        self,
        fetcher: PhotoFetcher | None,
        pool: Executor,
        preprocessing: Preprocessing,
        limits: ImageLimits,
        probe_pool: Executor | None = None,
    ) -> None:
        self._fetcher = fetcher
        self._pool = pool
        self._probe_pool = probe_pool if probe_pool is not None else pool
        self._preprocessing = preprocessing
        self._limits = limits

    async def fetch(self, url: str) -> bytes:
        """The bytes at `url`; a FetchError subclass on failure."""
        if self._fetcher is None:
            raise RuntimeError("this PhotoPipeline has no fetcher; it loads bytes only")
        return await self._fetcher.fetch(url)

    async def decode(self, data: bytes, crop: Crop | None = None) -> Image.Image:
        """The model-sized RGB image, decoded within the limits on the pool and cut to `crop`
        first when given; an ImageError subclass for anything unacceptable."""
        pre = self._preprocessing
        # A plain function of picklable arguments: `pool` may be a process pool.
        call = partial(decode_fitted, data, self._limits, pre.size, pre.crop_padding, crop)
        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    async def probe(self, data: bytes) -> ImageProbe:
        """What decoding `data` will cost, from its header alone; the same ImageError refusals
        as decode for anything over the limits."""
        call = partial(probe_image, data, self._limits, self._preprocessing.decode_size)
        return await asyncio.get_running_loop().run_in_executor(self._probe_pool, call)

    async def load_bytes(
        self, data: bytes, url: str | None = None, known: Container[str] = ()
    ) -> LoadedPhoto:
        """`data` hashed and, unless its hash is in `known`, decoded (ImageError)."""
        if len(data) <= _INLINE_HASH_BYTES:
            digest = content_hash(data)
        else:
            digest = await asyncio.get_running_loop().run_in_executor(
                self._pool, content_hash, data
            )
        if digest in known:
            return LoadedPhoto(url=url, hash=digest, image=None)
        return LoadedPhoto(url=url, hash=digest, image=await self.decode(data))

    async def load(self, url: str, known: Container[str] = ()) -> LoadedPhoto:
        """The photo at `url` fetched (FetchError), hashed and, unless its hash is in `known`,
        decoded (ImageError)."""
        return await self.load_bytes(await self.fetch(url), url, known)
