"""Hostile input: every bad request gets its status and a JSON error, never a 500 or a trace."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import socket
import struct
import time
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient
from PIL import Image

from models.fetch import ImageFetcher
from models.settings import ImageSettings, StoreSettings
from models.store.factory import open_store
from models.store.types import VectorStore
from tests.imageserver import ImageServer
from tests.photos import jpeg_bytes, photo, photo_bytes
from tests.query_support import (
    api_settings,
    app_client,
    catalog_store,
    embedder,
    error_of,
    fetch_settings,
    image_upload,
    metric_value,
)

pytestmark = pytest.mark.slow

Client = TestClient[Any, Any]
MAX_UPLOAD = 300_000
MAX_JSON = 200_000
MAX_IMAGE = 150_000


def assert_no_server_errors(metrics_text: str) -> None:
    for line in metrics_text.splitlines():
        if line.startswith("lookalike_http_request_duration_seconds_count"):
            assert 'status="500"' not in line, line


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[VectorStore]:
    async with catalog_store("edge", tmp_path) as s:
        yield s


@pytest.fixture
async def client(store: VectorStore, tmp_path: Path) -> AsyncIterator[Client]:
    settings = api_settings(
        tmp_path,
        max_upload_bytes=MAX_UPLOAD,
        max_json_bytes=MAX_JSON,
        images=ImageSettings(max_image_bytes=MAX_IMAGE, max_image_pixels=20_000_000),
    )
    async with app_client(settings, store) as c:
        yield c
        # Whatever the test sent, the service answered it without a 500.
        assert_no_server_errors(await (await c.get("/metrics")).text())


async def expect_error(resp: Any, status: int, code: str) -> str:
    text = await resp.text()
    assert "Traceback" not in text
    assert resp.status == status, text[:500]
    assert resp.content_type == "application/json"
    got, message = error_of(await resp.json())
    assert got == code, (got, message)
    return message


def png_header_bomb(width: int = 60_000, height: int = 60_000) -> bytes:
    """A tiny PNG whose header claims billions of pixels: refused before decoding."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def encoded(fmt: str) -> bytes:
    out = io.BytesIO()
    photo("coffee").resize((64, 48)).save(out, format=fmt)
    return out.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_bodies_over_the_limits_are_413(client: Client) -> None:
    big = b"\xff\xd8" + b"x" * (MAX_UPLOAD + 10)
    await expect_error(
        await client.post("/v1/search", data=image_upload(big)), 413, "body_too_large"
    )

    async def chunks() -> AsyncIterator[bytes]:
        # No Content-Length: the limit is enforced on the bytes as they stream in.
        for _ in range(8):
            yield b"A" * 50_000

    await expect_error(
        await client.post(
            "/v1/search", data=chunks(), headers={"Content-Type": "application/json"}
        ),
        413,
        "body_too_large",
    )
    payload = {"image_base64": base64.b64encode(b"y" * MAX_JSON).decode()}
    await expect_error(await client.post("/v1/search", json=payload), 413, "body_too_large")


async def test_an_image_over_the_image_limit_is_413(client: Client) -> None:
    data = photo_bytes("chelsea")
    assert MAX_IMAGE < len(data) < MAX_UPLOAD
    await expect_error(
        await client.post("/v1/search", data=image_upload(data)), 413, "image_too_large"
    )


async def test_non_images_and_unsupported_formats_are_415(client: Client) -> None:
    await expect_error(
        await client.post("/v1/search", data=image_upload(b"just some text, not a photo")),
        415,
        "not_an_image",
    )
    for fmt in ("BMP", "TIFF"):
        await expect_error(
            await client.post("/v1/search", data=image_upload(encoded(fmt))),
            415,
            "unsupported_format",
        )
    await expect_error(
        await client.post("/v1/search", data=b"hello", headers={"Content-Type": "text/plain"}),
        415,
        "unsupported_media_type",
    )
    b64 = base64.b64encode(b"%PDF-1.4 not an image").decode()
    await expect_error(
        await client.post("/v1/search", json={"image_base64": b64}), 415, "not_an_image"
    )


async def test_undecodable_and_bomb_images_are_422(client: Client) -> None:
    whole = jpeg_bytes(photo("chelsea"))
    await expect_error(
        await client.post("/v1/search", data=image_upload(whole[: len(whole) // 2])),
        422,
        "truncated_image",
    )
    await expect_error(
        await client.post("/v1/search", data=image_upload(png_header_bomb())),
        422,
        "too_many_pixels",
    )


async def test_an_extremely_thin_image_is_422_not_gigabytes_of_pixels(client: Client) -> None:
    strip = io.BytesIO()
    Image.new("RGB", (4, 6000), (200, 30, 30)).save(strip, format="PNG")
    await expect_error(
        await client.post("/v1/search", data=image_upload(strip.getvalue())),
        422,
        "extreme_aspect_ratio",
    )


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("?k=0", "bad_parameter"),
        ("?k=101", "bad_parameter"),
        ("?k=many", "bad_parameter"),
        ("?currency=USD&price_min=50&price_max=10", "bad_parameter"),
        ("?price_max=-3", "bad_parameter"),
        ("?price_max=30", "currency_required"),
        ("?currency=E1R", "bad_parameter"),
        ("?min_score=2", "bad_parameter"),
        ("?offset=-1", "bad_parameter"),
        ("?offset=100000", "bad_parameter"),
        ("?colour=red", "unknown_parameter"),
    ],
)
async def test_bad_parameters_are_400(client: Client, query: str, code: str) -> None:
    data = jpeg_bytes(photo("coffee"))
    await expect_error(await client.post(f"/v1/search{query}", data=image_upload(data)), 400, code)
    await expect_error(await client.get(f"/v1/listings/P-coffee/similar{query}"), 400, code)


async def test_malformed_bodies_are_400(client: Client) -> None:
    async def post_json(body: bytes) -> Any:
        return await client.post(
            "/v1/search", data=body, headers={"Content-Type": "application/json"}
        )

    await expect_error(await post_json(b"{not json"), 400, "bad_json")
    await expect_error(await post_json(b"[1, 2]"), 400, "bad_json")
    await expect_error(await post_json(b"{}"), 400, "missing_image")
    await expect_error(
        await post_json(b'{"image_base64": "aGk=", "image_url": "http://x.example/a.jpg"}'),
        400,
        "missing_image",
    )
    await expect_error(await post_json(b'{"image_base64": "@@not base64@@"}'), 400, "bad_base64")
    await expect_error(await post_json(b'{"image_base64": 12}'), 400, "bad_base64")
    await expect_error(await post_json(b'{"image_url": "x", "k": 3}'), 400, "unknown_field")
    for bad_url in (
        "ftp://x.example/a.jpg",
        "file:///etc/passwd",
        "http://",
        "http://[::1",
        "http://user:pw@x.example/a.jpg",
        "http://x.example/" + "a" * 5000,
    ):
        resp = await client.post("/v1/search", json={"image_url": bad_url})
        await expect_error(resp, 400, "bad_url")

    form = FormData()
    form.add_field("photo", b"\xff\xd8", filename="a.jpg")
    await expect_error(await client.post("/v1/search", data=form), 400, "unknown_field")
    form = FormData()
    form.add_field("image", b"\xff\xd8", filename="a.jpg")
    form.add_field("image", b"\xff\xd8", filename="b.jpg")
    await expect_error(await client.post("/v1/search", data=form), 400, "bad_multipart")
    await expect_error(
        await client.post(
            "/v1/search",
            data=b"--nope\r\n",
            headers={"Content-Type": "multipart/form-data; boundary=xyz"},
        ),
        400,
        "bad_multipart",
    )
    for content_type in ("multipart/form-data; boundary=xyz", "multipart/form-data"):
        await expect_error(
            await client.post("/v1/search", data=b"", headers={"Content-Type": content_type}),
            400,
            "bad_multipart",
        )


async def expect_url_failure(resp: Any) -> dict[str, Any]:
    """The one generic image_url answer; returns the error object."""
    await expect_error(resp, 422, "image_url_failed")
    error: dict[str, Any] = (await resp.json())["error"]
    return error


async def test_image_urls_at_loopback_and_metadata_addresses_are_refused(
    client: Client, image_server: ImageServer
) -> None:
    url = image_server.add("cat.jpg", jpeg_bytes(photo("chelsea")))
    refused = await expect_url_failure(await client.post("/v1/search", json={"image_url": url}))
    # One code and a generic message: nothing says why, so answers cannot map the network.
    assert set(refused) == {"code", "message"}
    assert image_server.count("cat.jpg") == 0
    for address in (
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/x.jpg",
        "http://10.0.0.8/x.jpg",
        "http://localhost:9/x.jpg",
        "http://[::ffff:169.254.169.254]/x.jpg",
    ):
        resp = await client.post("/v1/search", json={"image_url": address})
        assert await expect_url_failure(resp) == refused
    # Loopback spelled so that some resolvers read it as 127.0.0.1: refused one way or another.
    for disguised in ("http://2130706433/x.jpg", "http://127.1/x.jpg", "http://0x7f.0.0.1/x.jpg"):
        resp = await client.post("/v1/search", json={"image_url": disguised})
        assert resp.status in {400, 422}
        code, _ = error_of(await resp.json())
        assert code in {"image_url_failed", "bad_url"}
    text = await (await client.get("/metrics")).text()
    host_refusals = metric_value(
        text, "lookalike_image_url_failures_total", {"reason": "host_not_allowed"}
    )
    assert host_refusals is not None and host_refusals >= 6


async def test_closed_open_and_http_ports_answer_alike(
    store: VectorStore, image_server: ImageServer, tmp_path: Path
) -> None:
    """No port-scan oracle: a closed port, a port that never speaks HTTP and a missing page get
    the same answer. (A fetcher that may reach loopback stands in for the public internet.)"""
    settings = api_settings(tmp_path, image_url_timeout_s=1.0)
    fetcher = ImageFetcher(fetch_settings(True), max_bytes=MAX_IMAGE)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        targets = [
            f"http://127.0.0.1:{free_port()}/x.jpg",
            f"http://127.0.0.1:{silent.getsockname()[1]}/x.jpg",
            image_server.url("missing.jpg"),
        ]
        async with app_client(settings, store, fetcher=fetcher) as c:
            answers = [
                await expect_url_failure(await c.post("/v1/search", json={"image_url": url}))
                for url in targets
            ]
            text = await (await c.get("/metrics")).text()
    await fetcher.close()
    assert answers[0] == answers[1] == answers[2]
    assert set(answers[0]) == {"code", "message"}
    # The operator still sees each reason.
    for reason in ("connection_error", "timeout", "http_status"):
        assert metric_value(text, "lookalike_image_url_failures_total", {"reason": reason}) == 1


async def test_image_url_failures_with_private_hosts_allowed(
    store: VectorStore, image_server: ImageServer, tmp_path: Path
) -> None:
    settings = api_settings(
        tmp_path,
        images=ImageSettings(max_image_bytes=MAX_IMAGE),
        fetch=fetch_settings(True).model_copy(update={"fetch_retries": 3, "fetch_backoff_s": 0}),
        image_url_timeout_s=1.0,
    )
    missing = image_server.url("missing.jpg")
    text = image_server.add("page.html", b"<html>hi</html>", content_type="text/html")
    huge = image_server.add("huge.png", photo_bytes("chelsea"), content_type="image/png")
    stalled = image_server.add("stalled.jpg", jpeg_bytes(photo("coffee")), delay_s=30)
    flaky = image_server.add("flaky.jpg", status=503)
    async with app_client(settings, store) as c:
        # In development (private hosts allowed) the client is told why.
        error = await expect_url_failure(await c.post("/v1/search", json={"image_url": missing}))
        assert error["reason"] == "http_status" and "404" in error["detail"]
        await expect_error(
            await c.post("/v1/search", json={"image_url": text}), 415, "not_an_image"
        )
        error = await expect_url_failure(await c.post("/v1/search", json={"image_url": huge}))
        assert error["reason"] == "too_large"
        # A stalled host costs the shopper the image_url budget, not the read timeouts.
        started = time.monotonic()
        error = await expect_url_failure(await c.post("/v1/search", json={"image_url": stalled}))
        assert error["reason"] == "timeout"
        assert time.monotonic() - started < 3
        # The indexer may retry three times; a shopper's image_url is retried once at most.
        await expect_url_failure(await c.post("/v1/search", json={"image_url": flaky}))
        assert image_server.count("flaky.jpg") == 2
        assert_no_server_errors(await (await c.get("/metrics")).text())


async def test_unknown_routes_and_methods_are_json(client: Client) -> None:
    await expect_error(await client.get("/v2/nothing"), 404, "not_found")
    resp = await client.get("/v1/search")
    await expect_error(resp, 405, "method_not_allowed")
    assert "POST" in resp.headers["Allow"]


@pytest.mark.filterwarnings("ignore:Failed to obtain server version")
async def test_an_unreachable_store_makes_the_service_503_not_500(tmp_path: Path) -> None:
    model = embedder()
    dead = open_store(
        StoreSettings(qdrant_url=f"http://127.0.0.1:{free_port()}"), model.model_id, model.dim
    )
    try:
        async with app_client(api_settings(tmp_path), dead) as c:
            assert (await c.get("/healthz")).status == 200
            await expect_error(await c.get("/readyz"), 503, "not_ready")
            data = jpeg_bytes(photo("coffee"))
            await expect_error(
                await c.post("/v1/search", data=image_upload(data)), 503, "store_unavailable"
            )
            await expect_error(await c.get("/v1/listings/P-coffee"), 503, "store_unavailable")
            text = await (await c.get("/metrics")).text()
            assert_no_server_errors(text)
            failed = {"operation": "search", "outcome": "error"}
            assert metric_value(text, "lookalike_store_duration_seconds_count", failed) == 1
    finally:
        await dead.close()


async def test_a_collection_of_another_dimension_is_not_ready(tmp_path: Path) -> None:
    model = embedder()
    other = open_store(StoreSettings(index_path=tmp_path / "other"), model.model_id, 8)
    await other.ensure_collection()
    try:
        async with app_client(api_settings(tmp_path), other) as c:
            message = await expect_error(await c.get("/readyz"), 503, "not_ready")
            assert "8" in message and str(model.dim) in message
    finally:
        await other.close()


async def test_a_wrong_content_type_on_a_valid_image_is_still_judged_by_its_bytes(
    client: Client,
) -> None:
    form = FormData()
    form.add_field("image", encoded("PNG"), filename="a.gif", content_type="image/gif")
    resp = await client.post("/v1/search?k=1", data=form)
    assert resp.status == 200
    body = await resp.json()
    assert len(body["listings"]) == 1


def multipart(part_headers: list[bytes], body: bytes = b"x") -> bytes:
    """A raw one-part multipart body (boundary B) with exactly these part header lines."""
    return b"--B\r\n" + b"\r\n".join(part_headers) + b"\r\n\r\n" + body + b"\r\n--B--\r\n"


IMAGE_PART = b'Content-Disposition: form-data; name="image"; filename="a.jpg"'


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        pytest.param(
            {"Content-Type": "multipart/form-data; boundary=B"},
            multipart(
                [b'Content-Disposition: form-data; name="image"; filename="' + b"a" * 17_000 + b'"']
            ),
            id="filename-of-17000-characters",
        ),
        pytest.param(
            {"Content-Type": "multipart/form-data; boundary=B"},
            multipart([IMAGE_PART] + [b"X-Part-%d: v" % i for i in range(600)]),
            id="600-part-headers",
        ),
        pytest.param(
            {"Content-Type": "multipart/form-data; boundary=B"},
            multipart([IMAGE_PART, b"a part header line without a colon"]),
            id="header-without-colon",
        ),
        pytest.param(
            {"Content-Type": "multipart/form-data; boundary=B"},
            multipart([IMAGE_PART, b"X-Nul: a\x00b"]),
            id="nul-in-part-header",
        ),
        pytest.param(
            {"Content-Type": "application/json", "Content-Encoding": "gzip"},
            b'{"image_url": "not gzip at all"}',
            id="bad-gzip-body",
        ),
        pytest.param(
            {"Content-Type": "application/json", "Content-Encoding": "deflate"},
            b"\x78\x9c this is no deflate stream",
            id="bad-deflate-body",
        ),
        pytest.param(
            {"Content-Type": "multipart/form-data; boundary=B", "Content-Encoding": "gzip"},
            multipart([IMAGE_PART]),
            id="bad-gzip-multipart",
        ),
    ],
)
async def test_what_aiohttp_parsers_refuse_is_a_json_400(
    client: Client, caplog: pytest.LogCaptureFixture, headers: dict[str, str], body: bytes
) -> None:
    caplog.set_level(logging.INFO)
    resp = await client.post("/v1/search", data=body, headers=headers)
    message = await expect_error(resp, 400, "bad_request")
    assert len(message) < 200
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


async def test_host_names_idna_refuses_are_bad_urls(client: Client) -> None:
    for url in ("http://a..b/x.jpg", f"http://{'a' * 64}.example/x.jpg", "http://.example/x"):
        await expect_error(await client.post("/v1/search", json={"image_url": url}), 400, "bad_url")


async def test_errors_quote_little_of_the_input(client: Client) -> None:
    names = "&".join(f"parameter{i}=1" for i in range(400))
    resp = await client.get(f"/v1/listings/P-coffee/similar?{names}")
    message = await expect_error(resp, 400, "unknown_parameter")
    assert len(await resp.read()) < 1000, message
    form = FormData()
    form.add_field("x" * 5000, b"\xff\xd8", filename="a.jpg")
    resp = await client.post("/v1/search", data=form)
    await expect_error(resp, 400, "unknown_field")
    assert len(await resp.read()) < 1000


async def test_no_version_in_the_server_header(client: Client) -> None:
    for resp in (
        await client.get("/healthz"),
        await client.get("/v2/nothing"),
        await client.post("/v1/search", data=b"{", headers={"Content-Type": "application/json"}),
    ):
        assert resp.headers["Server"] == "lookalike"


async def test_a_client_hanging_up_mid_body_is_info_not_500(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    _reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(
        b"POST /v1/search HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: multipart/form-data; boundary=B\r\nContent-Length: 200000\r\n\r\n"
        + multipart([IMAGE_PART], b"\xff\xd8" + b"x" * 5000)[:4000]
    )
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.close()
    closed = {"route": "/v1/search", "method": "POST", "status": "499"}
    deadline = time.monotonic() + 10
    count = None
    while time.monotonic() < deadline:
        text = await (await client.get("/metrics")).text()
        count = metric_value(text, "lookalike_http_request_duration_seconds_count", closed)
        if count:
            break
        await asyncio.sleep(0.05)
    assert count == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert any("client disconnected" in r.getMessage() for r in caplog.records)
