"""PhotoPipeline with a real ImageFetcher against the loopback image server, and plain bytes."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest
from PIL import Image

import models.photos
from models.fetch import BadURL, FetchError, HTTPStatusError, ImageFetcher
from models.images import ImageError, ImageLimits, NotAnImage, TruncatedImage, content_hash
from models.network import Preprocessing
from models.photos import LoadedPhoto, PhotoPipeline
from models.settings import FetchSettings
from tests.imageserver import ImageServer
from tests.photos import photo_bytes

LIMITS = ImageLimits(max_bytes=16 * 1024 * 1024, max_pixels=40_000_000)
POOL_PREFIX = "photo-pool"


@dataclass(frozen=True)
class RecordingPreprocessing(Preprocessing):
    """The real preprocessing, and the thread each decode of the pipeline ran on."""

    threads: list[str] = field(default_factory=list, compare=False)


@pytest.fixture
def preprocessing(monkeypatch: pytest.MonkeyPatch) -> RecordingPreprocessing:
    pre = RecordingPreprocessing(size=224, mean=(127.0, 127.0, 127.0), std=(128.0, 128.0, 128.0))
    real = models.photos.decode_fitted

    # The pipeline decodes through this one function (a process pool can run it): note where.
    def recording(*args: Any, **kwargs: Any) -> Image.Image:
        pre.threads.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(models.photos, "decode_fitted", recording)
    return pre


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix=POOL_PREFIX) as executor:
        yield executor


@pytest.fixture
async def fetcher() -> AsyncIterator[ImageFetcher]:
    s = FetchSettings(
        allow_private_image_hosts=True,
        fetch_retries=0,
        fetch_connect_timeout_s=2.0,
        fetch_read_timeout_s=2.0,
    )
    async with ImageFetcher(s, max_bytes=LIMITS.max_bytes) as f:
        yield f


@pytest.fixture
def pipeline(
    fetcher: ImageFetcher, pool: ThreadPoolExecutor, preprocessing: RecordingPreprocessing
) -> PhotoPipeline:
    return PhotoPipeline(fetcher, pool, preprocessing, LIMITS)


async def test_load_fetches_hashes_and_decodes_on_the_pool(
    pipeline: PhotoPipeline, preprocessing: RecordingPreprocessing, image_server: ImageServer
) -> None:
    body = photo_bytes("rocket")
    url = image_server.add("rocket.jpg", body)
    loaded = await pipeline.load(url)
    assert loaded.url == url
    assert loaded.hash == content_hash(body)
    assert loaded.image is not None
    assert loaded.image.size == (224, 224)
    assert loaded.image.mode == "RGB"
    assert len(preprocessing.threads) == 1
    assert preprocessing.threads[0].startswith(POOL_PREFIX)
    assert preprocessing.threads[0] != threading.current_thread().name


async def test_known_hash_skips_decoding(
    pipeline: PhotoPipeline, preprocessing: RecordingPreprocessing, image_server: ImageServer
) -> None:
    body = photo_bytes("coffee")
    url = image_server.add("coffee.png", body, content_type="image/png")
    loaded = await pipeline.load(url, known={content_hash(body)})
    assert loaded == LoadedPhoto(url=url, hash=content_hash(body), image=None)
    assert preprocessing.threads == []
    assert image_server.count("coffee.png") == 1  # still fetched: the hash needs the bytes


async def test_unknown_hash_among_known_ones_is_decoded(
    pipeline: PhotoPipeline, preprocessing: RecordingPreprocessing
) -> None:
    loaded = await pipeline.load_bytes(photo_bytes("china"), known={"0" * 64})
    assert loaded.url is None
    assert loaded.image is not None
    assert len(preprocessing.threads) == 1


async def test_large_bytes_are_hashed_off_the_loop_too(
    pool: ThreadPoolExecutor, preprocessing: RecordingPreprocessing
) -> None:
    # Over the inline-hash size: the hash comes from the pool, and is the same hash.
    data = photo_bytes("astronaut") + b"\x00" * (2 * 1024 * 1024)
    pipeline = PhotoPipeline(None, pool, preprocessing, LIMITS)
    loaded = await pipeline.load_bytes(data, known={content_hash(data)})
    assert loaded.hash == content_hash(data)
    assert loaded.image is None


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", NotAnImage),
        (b"definitely not a photo", NotAnImage),
        (photo_bytes("rocket")[:2000], TruncatedImage),
    ],
)
async def test_bad_bytes_raise_image_error(
    pipeline: PhotoPipeline, data: bytes, error: type[ImageError]
) -> None:
    with pytest.raises(error):
        await pipeline.load_bytes(data)
    with pytest.raises(ImageError):
        await pipeline.decode(data)


async def test_bad_bytes_behind_a_url_raise_image_error(
    pipeline: PhotoPipeline, image_server: ImageServer
) -> None:
    url = image_server.add("fake.jpg", b"<html>not an image</html>")
    with pytest.raises(NotAnImage):
        await pipeline.load(url)


async def test_fetch_errors_propagate(
    pipeline: PhotoPipeline, preprocessing: RecordingPreprocessing, image_server: ImageServer
) -> None:
    with pytest.raises(HTTPStatusError) as info:
        await pipeline.load(image_server.url("missing.jpg"))
    assert info.value.status == 404
    assert info.value.attempts == 1
    with pytest.raises(BadURL):
        await pipeline.load("http://" + "a" * 64 + ".invalid/x.jpg")
    assert preprocessing.threads == []


async def test_decode_alone_needs_no_fetcher(
    pool: ThreadPoolExecutor, preprocessing: RecordingPreprocessing
) -> None:
    pipeline = PhotoPipeline(None, pool, preprocessing, LIMITS)
    image = await pipeline.decode(photo_bytes("flower"))
    assert image.size == (224, 224)
    assert preprocessing.threads[0].startswith(POOL_PREFIX)
    with pytest.raises(RuntimeError, match="no fetcher"):
        await pipeline.load("http://images.example/x.jpg")


async def test_any_fetcher_with_a_fetch_method_fits(
    pool: ThreadPoolExecutor, preprocessing: RecordingPreprocessing
) -> None:
    body = photo_bytes("chelsea")

    class Canned:
        async def fetch(self, url: str) -> bytes:
            if url != "mem://cat":
                raise FetchError("unknown", url)
            return body

    pipeline = PhotoPipeline(Canned(), pool, preprocessing, LIMITS)
    loaded = await pipeline.load("mem://cat")
    assert loaded.hash == content_hash(body)
    with pytest.raises(FetchError):
        await pipeline.load("mem://dog")
