"""A manifest's photos as local files: paths resolved, URLs fetched once into the cache, all
decoded once the production way, so that a bad photo is reported before any training starts."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
import tempfile
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tqdm import tqdm

from models.fetch import FetchError, ImageFetcher
from models.images import ImageError, ImageLimits
from models.network import Preprocessing
from models.photos import PhotoPipeline
from models.settings import FetchSettings

# Photos fetched or decoded at once: enough to keep a remote host and both cores busy.
_CONCURRENCY = 16
_SUFFIX_CHARS = 8


def is_url(ref: str) -> bool:
    return urlsplit(ref).scheme.lower() in ("http", "https")


def cache_path(cache: Path, url: str) -> Path:
    """Where the photo at `url` is kept: named by the URL's hash, so a URL is fetched once."""
    suffix = Path(urlsplit(url).path).suffix.lower()
    suffix = suffix if 1 < len(suffix) <= _SUFFIX_CHARS and suffix[1:].isalnum() else ""
    return cache / f"{hashlib.sha256(url.encode()).hexdigest()[:40]}{suffix}"


@dataclass(frozen=True)
class PhotoRequest:
    """One photo reference of one manifest line."""

    lineno: int
    ref: str


@dataclass(frozen=True)
class PhotoProblem:
    lineno: int
    ref: str
    reason: str


@dataclass
class ResolvedPhotos:
    """ref (as written, per line) -> the local file; the refs that could not be used."""

    files: dict[tuple[int, str], Path]
    problems: list[PhotoProblem]
    fetched: int = 0
    cached: int = 0


def _write_atomically(path: Path, data: bytes) -> None:
    # A fetch interrupted mid-write must not leave a truncated photo that later runs trust.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".part-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class _Resolver:
    def __init__(
        self,
        root: Path,
        cache: Path,
        pipeline: PhotoPipeline,
        bar: tqdm[Any],
    ) -> None:
        self.root = root
        self.cache = cache
        self.pipeline = pipeline
        self.bar = bar
        self.result = ResolvedPhotos(files={}, problems=[])
        self._gate = asyncio.Semaphore(_CONCURRENCY)
        # One fetch per URL, however many lines name it.
        self._fetches: dict[str, asyncio.Task[Path]] = {}

    async def _fetch(self, url: str) -> Path:
        path = cache_path(self.cache, url)
        if path.exists():
            self.result.cached += 1
            return path
        data = await self.pipeline.fetch(url)
        self.cache.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(_write_atomically, path, data)
        self.result.fetched += 1
        return path

    async def one(self, request: PhotoRequest) -> None:
        async with self._gate:
            try:
                if is_url(request.ref):
                    task = self._fetches.get(request.ref)
                    if task is None:
                        task = asyncio.ensure_future(self._fetch(request.ref))
                        self._fetches[request.ref] = task
                    path = await task
                else:
                    path = self.root / request.ref
                data = await asyncio.to_thread(path.read_bytes)
                await self.pipeline.decode(data)
            except FetchError as e:
                self._problem(request, f"cannot fetch: {e}")
            except FileNotFoundError:
                self._problem(request, "no such file")
            except (IsADirectoryError, PermissionError, OSError) as e:
                self._problem(request, f"cannot read: {e.strerror or e}")
            except ImageError as e:
                self._problem(request, f"cannot decode: {e}")
            else:
                self.result.files[(request.lineno, request.ref)] = path
            finally:
                self.bar.update(1)

    def _problem(self, request: PhotoRequest, reason: str) -> None:
        self.result.problems.append(PhotoProblem(request.lineno, request.ref, reason))


async def _resolve(
    requests: Sequence[PhotoRequest],
    root: Path,
    cache: Path,
    fetch: FetchSettings,
    limits: ImageLimits,
    preprocessing: Preprocessing,
    progress: bool,
) -> ResolvedPhotos:
    with (
        ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool,
        tqdm(
            total=len(requests), desc="photos", unit="photo", file=sys.stderr, disable=not progress
        ) as bar,
    ):
        async with ImageFetcher(fetch, limits.max_bytes) as fetcher:
            pipeline = PhotoPipeline(fetcher, pool, preprocessing, limits)
            resolver = _Resolver(root, cache, pipeline, bar)
            await asyncio.gather(*(resolver.one(r) for r in requests))
    return resolver.result


def resolve_photos(
    requests: Iterable[PhotoRequest],
    root: Path,
    cache: Path,
    fetch: FetchSettings,
    limits: ImageLimits,
    preprocessing: Preprocessing,
    progress: bool = False,
) -> ResolvedPhotos:
    """Every requested photo as a readable, decodable local file (blocking): local paths are
    relative to `root`, URLs are fetched through the guarded fetcher into `cache` unless
    already there. Each photo is decoded within `limits` as the indexer would."""
    wanted = list(dict.fromkeys(requests))
    return asyncio.run(_resolve(wanted, root, cache, fetch, limits, preprocessing, progress))
