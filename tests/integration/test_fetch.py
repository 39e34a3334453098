"""ImageFetcher against real loopback HTTP servers: success, errors, retries, limits, SSRF."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import ipaddress
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from models.fetch import (
    AddressPolicy,
    BadURL,
    ConnectionFailed,
    FetchError,
    FetchTimeout,
    GuardedResolver,
    HostNotAllowed,
    HTTPStatusError,
    ImageFetcher,
    ResponseTooLarge,
    TooManyRedirects,
    create_session,
    is_public_address,
)
from models.settings import FetchSettings
from tests.imageserver import ImageServer
from tests.photos import photo_bytes

MAX_BYTES = 1024 * 1024
LOOPBACK_ONLY = AddressPolicy(allowed_networks=(ipaddress.ip_network("127.0.0.1/32"),))


def settings(**overrides: object) -> FetchSettings:
    """Short timeouts and backoff so failure paths run fast; loopback allowed unless overridden."""
    values: dict[str, object] = {
        "allow_private_image_hosts": True,
        "fetch_connect_timeout_s": 2.0,
        "fetch_read_timeout_s": 2.0,
        "fetch_retries": 2,
        "fetch_backoff_s": 0.01,
        "fetch_max_redirects": 3,
    }
    values.update(overrides)
    return FetchSettings(**values)  # type: ignore[arg-type]


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def serve(handler: Handler, host: str = "127.0.0.1") -> AsyncIterator[str]:
    """A loopback server answering every path with `handler`; yields its base URL."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}"
    finally:
        await runner.cleanup()


@dataclass
class ConnectionCounter:
    """Raw TCP listeners that count every connection attempt they see."""

    port: int = 0
    accepted: int = 0
    servers: list[asyncio.Server] = field(default_factory=list)

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        writer.close()


@pytest.fixture
async def listener() -> AsyncIterator[ConnectionCounter]:
    """Listens on 127.0.0.1 and, where the host has it, ::1 on one port."""
    counter = ConnectionCounter()
    v4 = await asyncio.start_server(counter._on_connect, "127.0.0.1", 0)
    counter.servers.append(v4)
    counter.port = v4.sockets[0].getsockname()[1]
    # Without IPv6 loopback on the host, the IPv4 listener still catches what matters.
    with contextlib.suppress(OSError):
        counter.servers.append(await asyncio.start_server(counter._on_connect, "::1", counter.port))
    try:
        yield counter
    finally:
        for server in counter.servers:
            server.close()
            await server.wait_closed()


# ---- success paths ------------------------------------------------------------------------


async def test_fetches_the_exact_bytes(image_server: ImageServer) -> None:
    body = photo_bytes("rocket")
    url = image_server.add("rocket.jpg", body)
    async with ImageFetcher(settings(), MAX_BYTES) as fetcher:
        assert await fetcher.fetch(url) == body
    assert image_server.count("rocket.jpg") == 1


async def test_follows_redirects_within_the_limit(image_server: ImageServer) -> None:
    body = photo_bytes("chelsea")
    image_server.add("final.png", body, content_type="image/png")
    # Three hops: a -> b (relative) -> c -> final, exactly fetch_max_redirects.
    image_server.add("c", redirect_to=image_server.url("final.png"))
    image_server.add("b", redirect_to="/c")
    start = image_server.add("a", redirect_to=image_server.url("b"))
    async with ImageFetcher(settings(fetch_max_redirects=3), MAX_BYTES) as fetcher:
        assert await fetcher.fetch(start) == body
    assert image_server.requests == ["/a", "/b", "/c", "/final.png"]


async def test_body_of_exactly_max_bytes_is_accepted(image_server: ImageServer) -> None:
    url = image_server.add("exact", b"\x01" * 5000)
    async with ImageFetcher(settings(), 5000) as fetcher:
        assert len(await fetcher.fetch(url)) == 5000


# ---- HTTP errors and retries --------------------------------------------------------------


async def test_404_is_not_retried(image_server: ImageServer) -> None:
    url = image_server.url("missing.jpg")
    async with ImageFetcher(settings(fetch_retries=3), MAX_BYTES) as fetcher:
        with pytest.raises(HTTPStatusError) as info:
            await fetcher.fetch(url)
    assert info.value.status == 404
    assert info.value.retryable is False
    assert info.value.reason == "http_status"
    assert url in str(info.value)
    assert "not found" not in str(info.value)  # the server's body never leaks into the message
    assert image_server.count("missing.jpg") == 1


async def test_503_then_success_is_retried(image_server: ImageServer) -> None:
    body = photo_bytes("coffee")
    url = image_server.add("flaky.png", body, fail_first=2, fail_status=503)
    async with ImageFetcher(settings(fetch_retries=2), MAX_BYTES) as fetcher:
        assert await fetcher.fetch(url) == body
    assert image_server.count("flaky.png") == 3


async def test_429_is_retried(image_server: ImageServer) -> None:
    url = image_server.add("busy", b"ok", fail_first=1, fail_status=429)
    async with ImageFetcher(settings(fetch_retries=1), MAX_BYTES) as fetcher:
        assert await fetcher.fetch(url) == b"ok"
    assert image_server.count("busy") == 2


async def test_retries_are_bounded(image_server: ImageServer) -> None:
    url = image_server.add("down", b"never", fail_first=100, fail_status=502)
    async with ImageFetcher(settings(fetch_retries=2), MAX_BYTES) as fetcher:
        with pytest.raises(HTTPStatusError) as info:
            await fetcher.fetch(url)
    assert info.value.status == 502
    assert info.value.retryable is True
    assert image_server.count("down") == 3


async def test_backoff_grows_between_attempts(image_server: ImageServer) -> None:
    url = image_server.add("slowfail", b"", fail_first=100, fail_status=503)
    async with ImageFetcher(settings(fetch_retries=2, fetch_backoff_s=0.2), MAX_BYTES) as f:
        start = time.perf_counter()
        with pytest.raises(HTTPStatusError):
            await f.fetch(url)
        elapsed = time.perf_counter() - start
    # Waits of 0.2 and 0.4 s, each jittered down to no less than half.
    assert 0.3 <= elapsed < 2.0
    assert image_server.count("slowfail") == 3


async def test_slow_server_times_out_and_is_retried(image_server: ImageServer) -> None:
    url = image_server.add("slow.jpg", b"late", delay_s=1.0)
    s = settings(fetch_read_timeout_s=0.2, fetch_connect_timeout_s=0.5, fetch_retries=1)
    async with ImageFetcher(s, MAX_BYTES) as fetcher:
        start = time.perf_counter()
        with pytest.raises(FetchTimeout) as info:
            await fetcher.fetch(url)
        elapsed = time.perf_counter() - start
    assert info.value.retryable is True
    assert info.value.reason == "timeout"
    assert url in str(info.value)
    assert elapsed < 1.5
    assert image_server.count("slow.jpg") == 2


async def test_server_that_drips_bytes_forever_times_out() -> None:
    async def drip(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for _ in range(200):
            await resp.write(b"x")
            await asyncio.sleep(0.05)
        return resp

    s = settings(fetch_read_timeout_s=0.3, fetch_connect_timeout_s=0.3, fetch_retries=0)
    async with serve(drip) as base, ImageFetcher(s, MAX_BYTES) as fetcher:
        start = time.perf_counter()
        with pytest.raises(FetchTimeout):
            await fetcher.fetch(base + "/drip")
        # Every read succeeds within sock_read; only the whole-attempt bound stops it.
        assert time.perf_counter() - start < 2.0


async def test_closed_port_is_a_retryable_connection_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with ImageFetcher(settings(fetch_retries=1), MAX_BYTES) as fetcher:
        with pytest.raises(ConnectionFailed) as info:
            await fetcher.fetch(f"http://127.0.0.1:{port}/x.jpg")
    assert info.value.retryable is True
    assert info.value.reason == "connection_error"


# ---- size cap -----------------------------------------------------------------------------


async def test_content_length_over_the_cap_is_refused(image_server: ImageServer) -> None:
    url = image_server.add("big.jpg", b"\x00" * 10_001)
    async with ImageFetcher(settings(), 10_000) as fetcher:
        with pytest.raises(ResponseTooLarge) as info:
            await fetcher.fetch(url)
    assert info.value.retryable is False
    assert "10001" in str(info.value)
    assert image_server.count("big.jpg") == 1


async def test_chunked_body_over_the_cap_is_abandoned_early() -> None:
    total = 64 * 1024 * 1024
    sent = 0

    async def endless(request: web.Request) -> web.StreamResponse:
        nonlocal sent
        resp = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        chunk = b"\xff" * 65536
        try:
            while sent < total:
                await resp.write(chunk)
                sent += len(chunk)
        except (ConnectionError, RuntimeError):
            pass  # the client hung up, as it should
        return resp

    async with serve(endless) as base, ImageFetcher(settings(), 100_000) as fetcher:
        with pytest.raises(ResponseTooLarge):
            await fetcher.fetch(base + "/stream.jpg")
        await asyncio.sleep(0.2)
    assert sent < total // 4


async def test_chunked_body_under_the_cap_is_read_whole() -> None:
    body = photo_bytes("china")

    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(0, len(body), 7000):
            await resp.write(body[i : i + 7000])
        await resp.write_eof()
        return resp

    async with serve(chunked) as base, ImageFetcher(settings(), MAX_BYTES) as fetcher:
        assert await fetcher.fetch(base + "/c.jpg") == body


async def test_compressed_bomb_is_capped_on_decoded_bytes() -> None:
    # A few KB on the wire, 50 MB once a client inflates it; the cap counts what comes out.
    bomb = gzip.compress(b"\x00" * (50 * 1024 * 1024))

    async def gzipped(request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=bomb, headers={"Content-Encoding": "gzip", "Content-Type": "image/jpeg"}
        )

    assert len(bomb) < MAX_BYTES
    async with serve(gzipped) as base, ImageFetcher(settings(), MAX_BYTES) as fetcher:
        with pytest.raises(ResponseTooLarge):
            await fetcher.fetch(base + "/z.jpg")


# ---- redirects and SSRF -------------------------------------------------------------------


async def test_too_many_redirects_are_refused(image_server: ImageServer) -> None:
    for i in range(5):
        image_server.add(f"r{i}", redirect_to=image_server.url(f"r{i + 1}"))
    image_server.add("r5", b"too far")
    async with ImageFetcher(settings(fetch_max_redirects=3, fetch_retries=2), MAX_BYTES) as f:
        with pytest.raises(TooManyRedirects) as info:
            await f.fetch(image_server.url("r0"))
    assert info.value.retryable is False
    assert image_server.requests == ["/r0", "/r1", "/r2", "/r3"]


async def test_redirect_loop_is_refused(image_server: ImageServer) -> None:
    url = image_server.add("loop", redirect_to="/loop")
    async with ImageFetcher(settings(fetch_max_redirects=2), MAX_BYTES) as fetcher:
        with pytest.raises(TooManyRedirects):
            await fetcher.fetch(url)
    assert image_server.count("loop") == 3


@pytest.mark.parametrize(
    ("target", "error"),
    [
        ("http://169.254.169.254/latest/meta-data", HostNotAllowed),
        ("http://10.0.0.1/", HostNotAllowed),
        ("http://127.0.0.2/x", HostNotAllowed),
        ("http://[::1]/", HostNotAllowed),
        ("http://[fd00::1]/", HostNotAllowed),
        ("file:///etc/passwd", BadURL),
        ("gopher://127.0.0.1:70/", BadURL),
        ("http://admin:hunter2@images.example/x", BadURL),
    ],
)
async def test_redirect_to_a_refused_target_is_refused(
    image_server: ImageServer, target: str, error: type[FetchError]
) -> None:
    # The server itself is trusted (127.0.0.1/32) so that only the redirect hop is judged.
    url = image_server.add("go", redirect_to=target)
    s = settings(allow_private_image_hosts=False)
    async with ImageFetcher(s, MAX_BYTES, policy=LOOPBACK_ONLY) as fetcher:
        with pytest.raises(error) as info:
            await fetcher.fetch(url)
    assert info.value.retryable is False
    assert "hunter2" not in str(info.value)
    assert image_server.requests == ["/go"]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/x.jpg",
        "http://localhost:{port}/x.jpg",
        "http://[::1]:{port}/x.jpg",
        "http://[::ffff:127.0.0.1]:{port}/x.jpg",
        "http://127.1:{port}/x.jpg",
        "http://2130706433:{port}/x.jpg",
        "http://0x7f.0.0.1:{port}/x.jpg",
        "http://0.0.0.0:{port}/x.jpg",
        "https://127.0.0.1:{port}/x.jpg",
    ],
)
async def test_loopback_is_refused_without_any_connection(
    listener: ConnectionCounter, url: str
) -> None:
    s = settings(allow_private_image_hosts=False, fetch_retries=2)
    async with ImageFetcher(s, MAX_BYTES) as fetcher:
        with pytest.raises((HostNotAllowed, BadURL)) as info:
            await fetcher.fetch(url.format(port=listener.port))
    assert info.value.retryable is False
    assert listener.accepted == 0


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data",
        "http://[fe80::1]/",
        "http://10.0.0.1/",
        "http://172.16.5.4/",
        "http://192.168.1.1/",
        "http://100.64.0.1/",
        "http://224.0.0.1/",
        "http://240.0.0.1/",
        "http://[fc00::1]/",
        "http://[::ffff:10.0.0.1]/",
        "http://[::ffff:169.254.169.254]/",
        "http://[64:ff9b::a9fe:a9fe]/",
    ],
)
async def test_private_addresses_are_refused_before_connecting(url: str) -> None:
    # A real attempt would hang until the connect timeout; a refusal is immediate and typed.
    s = settings(allow_private_image_hosts=False, fetch_connect_timeout_s=5.0)
    async with ImageFetcher(s, MAX_BYTES) as fetcher:
        start = time.perf_counter()
        with pytest.raises(HostNotAllowed) as info:
            await fetcher.fetch(url)
    assert time.perf_counter() - start < 0.5
    assert info.value.reason == "host_not_allowed"


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://images.example/a.jpg",
        "gopher://images.example/",
        "data:image/png;base64,iVBORw0KGgo=",
        "javascript:alert(1)",
        "http:///no-host.jpg",
        "not a url",
        "http://user:s3cret@images.example/a.jpg",
        "http://images.example:99999/a.jpg",
        "http://images.example/" + "a" * 5000,
    ],
)
async def test_bad_urls_are_refused(url: str) -> None:
    async with ImageFetcher(settings(allow_private_image_hosts=False), MAX_BYTES) as fetcher:
        with pytest.raises(BadURL) as info:
            await fetcher.fetch(url)
    assert info.value.reason == "bad_url"
    assert "s3cret" not in str(info.value)
    assert len(str(info.value)) < 400


# Spellings that once escaped fetch() as UnicodeError (the resolver IDNA-encodes the host) or
# went to DNS and came back a retryable ConnectionFailed for a name that can never resolve.
HOSTILE_URLS: list[tuple[str, str]] = [
    ("http://" + "a" * 64 + ".invalid/x.jpg", "bad_url"),  # label over 63
    ("HTTP://" + "a" * 64 + ".invalid/x.jpg", "bad_url"),
    ("http://a..b/x.jpg", "bad_url"),  # empty label
    ("http://.a/x.jpg", "bad_url"),
    ("http://./x.jpg", "bad_url"),
    ("http://..../x.jpg", "bad_url"),
    ("http://" + ".".join(["a" * 60] * 5) + "/x.jpg", "bad_url"),  # 304-char host
    ("http://" + ".".join(["a" * 63] * 4) + ".c/x.jpg", "bad_url"),  # 257-char host
    ("http://" + "\u00e9" * 64 + ".example/x.jpg", "bad_url"),  # unicode label too long
    ("http://\u00e4" + "a" * 60 + ".example/x.jpg", "bad_url"),  # punycode form over 63
    ("http://xn--/x.jpg", "bad_url"),  # empty punycode
    ("http://xn--a/x.jpg", "bad_url"),  # punycode that does not decode
    ("http://a.xn--/x.jpg", "bad_url"),
    ("http://xn--a.xn--b/x.jpg", "bad_url"),
    ("http://xn--ab-\u00e9/x.jpg", "bad_url"),  # non-ASCII inside an xn-- label
    ("http://\ufeff.example/x.jpg", "bad_url"),  # BOM
    ("http://a\u200db.example/x.jpg", "bad_url"),  # zero-width joiner
    ("http://a\udcffb.example/x.jpg", "bad_url"),  # lone surrogate
    ("http://a\x00b.example/x.jpg", "bad_url"),
    ("http://%41.example/x.jpg", "bad_url"),  # percent-encoded host
    ("http://%zz.example/x.jpg", "bad_url"),
    ("http://a%2e%2eb/x.jpg", "bad_url"),
    ("http://%00/x.jpg", "bad_url"),
    ("http://exa mple.com/x.jpg", "bad_url"),
    ("http://exa<mple.com/x.jpg", "bad_url"),
    ("http://[::1/x.jpg", "bad_url"),  # IPv6 oddities
    ("http://[::1]]/x.jpg", "bad_url"),
    ("http://[]/x.jpg", "bad_url"),
    ("http://[zz::1]/x.jpg", "bad_url"),
    ("http://[v1.fe]/x.jpg", "bad_url"),  # IPvFuture: yarl would drop the brackets
    ("http://[::ffff:1.2.3.4.5]/x.jpg", "bad_url"),
    ("http://[1:2:3:4:5:6:7:8:9]/x.jpg", "bad_url"),
    ("http://[fe80::1%25eth0]/x.jpg", "host_not_allowed"),  # zone id: link-local
    ("http://1.2.3.4.5/x.jpg", "bad_url"),
    ("http://999.1.1.1/x.jpg", "bad_url"),
    ("http://127.0.0.1\uff0e/x.jpg", "bad_url"),  # fullwidth dot left trailing
    ("http://images.example:0/x.jpg", "bad_url"),  # ports
    ("http://images.example:65536/x.jpg", "bad_url"),
    ("http://images.example:-1/x.jpg", "bad_url"),
    ("http://images.example:abc/x.jpg", "bad_url"),
    ("http://images.example:99999999999999999999/x.jpg", "bad_url"),
]


@pytest.mark.parametrize(("url", "reason"), HOSTILE_URLS)
async def test_hostile_spellings_are_a_fetch_error(url: str, reason: str) -> None:
    s = settings(allow_private_image_hosts=False, fetch_retries=2)
    async with ImageFetcher(s, MAX_BYTES) as fetcher:
        try:
            await fetcher.fetch(url)
        except FetchError as e:
            error = e
        else:
            pytest.fail(f"{url!a} was fetched")
    assert error.reason == reason
    assert error.retryable is False
    assert error.attempts == 0  # refused before any connection or DNS lookup
    assert len(str(error)) < 400


@pytest.mark.parametrize(
    "host",
    [
        "a" * 64 + ".invalid",
        "a..b",
        "xn--a",
        "%41.example",
        "[v1.fe]",
        ".".join(["a" * 60] * 5),
    ],
)
async def test_redirect_to_a_hostile_spelling_is_bad_url(host: str) -> None:
    asked: list[str] = []

    async def redirect(request: web.Request) -> web.StreamResponse:
        asked.append(request.path)
        # Set by hand: web.HTTPFound would normalise the Location through yarl first.
        return web.Response(status=302, headers={"Location": f"http://{host}/x.jpg"})

    async with serve(redirect) as base, ImageFetcher(settings(fetch_retries=2), MAX_BYTES) as f:
        with pytest.raises(BadURL) as info:
            await f.fetch(base + "/go")
    assert info.value.reason == "bad_url"
    assert info.value.attempts == 1
    assert asked == ["/go"]


async def test_unicode_error_from_aiohttp_is_bad_url() -> None:
    # The safety net behind _checked: a URL that skipped it still fails as a FetchError.
    async with ImageFetcher(settings(), MAX_BYTES) as fetcher:
        with pytest.raises(BadURL) as info:
            await fetcher._get(URL("http://a..b/x.jpg"))
    assert isinstance(info.value.__cause__, UnicodeError)


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "LOCALHOST",
        "\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54",  # fullwidth, NFKC-folded
        "127\u30020\u30020\u30021",  # ideographic full stops fold to dots
    ],
)
async def test_odd_but_valid_spellings_still_fetch(image_server: ImageServer, host: str) -> None:
    image_server.add("ok.jpg", b"img")
    async with ImageFetcher(settings(), MAX_BYTES) as fetcher:
        assert await fetcher.fetch(f"http://{host}:{image_server.port}/ok.jpg") == b"img"


async def test_folded_loopback_spelling_is_still_refused(listener: ConnectionCounter) -> None:
    # yarl folds these to 127.0.0.1 before aiohttp sees them; the guard must judge that form.
    s = settings(allow_private_image_hosts=False)
    async with ImageFetcher(s, MAX_BYTES) as fetcher:
        for host in ("127\u30020\u30020\u30021", "\uff11\uff12\uff17.0.0.1"):
            with pytest.raises(HostNotAllowed):
                await fetcher.fetch(f"http://{host}:{listener.port}/x.jpg")
    assert listener.accepted == 0


# ---- attempts -----------------------------------------------------------------------------


async def test_attempts_count_one_for_a_404(image_server: ImageServer) -> None:
    async with ImageFetcher(settings(fetch_retries=3), MAX_BYTES) as fetcher:
        with pytest.raises(HTTPStatusError) as info:
            await fetcher.fetch(image_server.url("missing.jpg"))
    assert info.value.attempts == 1


async def test_attempts_count_every_retry_of_a_timeout(image_server: ImageServer) -> None:
    url = image_server.add("slow.jpg", b"late", delay_s=1.0)
    s = settings(fetch_read_timeout_s=0.1, fetch_connect_timeout_s=0.5, fetch_retries=2)
    async with ImageFetcher(s, MAX_BYTES) as fetcher:
        with pytest.raises(FetchTimeout) as info:
            await fetcher.fetch(url)
    assert info.value.attempts == 3
    assert image_server.count("slow.jpg") == 3


async def test_attempts_stop_counting_at_the_first_permanent_failure(
    image_server: ImageServer,
) -> None:
    # Two 503s, then the route answers 404 once its failures are spent (no body registered).
    url = image_server.add("flaky", b"", fail_first=1, fail_status=503, status=404)
    async with ImageFetcher(settings(fetch_retries=5), MAX_BYTES) as fetcher:
        with pytest.raises(HTTPStatusError) as info:
            await fetcher.fetch(url)
    assert info.value.status == 404
    assert info.value.attempts == 2


async def test_guarded_resolver_filters_what_it_resolves() -> None:
    refusing = GuardedResolver(AddressPolicy())
    with pytest.raises(HostNotAllowed):
        await refusing.resolve("localhost", 80)
    trusting = GuardedResolver(LOOPBACK_ONLY)
    results = await trusting.resolve("localhost", 80)
    assert results
    assert {r["host"] for r in results} <= {"127.0.0.1"}


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("1.1.1.1", True),
        ("2606:4700:4700::1111", True),
        ("64:ff9b::808:808", True),  # NAT64 form of 8.8.8.8
        ("127.0.0.1", False),
        ("169.254.169.254", False),
        ("100.100.100.100", False),
        ("198.18.0.1", False),
        ("255.255.255.255", False),
        ("::", False),
        ("::1", False),
        ("::127.0.0.1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:8.8.8.8", True),
        ("2002:7f00:1::", False),  # 6to4 wrapping 127.0.0.1
        ("2001:db8::1", False),
        ("ff02::1", False),
    ],
)
def test_public_address_classification(address: str, public: bool) -> None:
    assert is_public_address(ipaddress.ip_address(address)) is public


# ---- per-host concurrency -----------------------------------------------------------------


@dataclass
class InFlight:
    now: int = 0
    peak: int = 0
    served: int = 0


def counting_handler(state: InFlight, delay_s: float) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        state.now += 1
        state.peak = max(state.peak, state.now)
        try:
            await asyncio.sleep(delay_s)
        finally:
            state.now -= 1
        state.served += 1
        return web.Response(body=b"img", content_type="image/jpeg")

    return handle


async def test_per_host_limit_is_respected() -> None:
    state = InFlight()
    async with (
        serve(counting_handler(state, 0.15)) as base,
        ImageFetcher(settings(fetch_per_host_limit=2), MAX_BYTES) as fetcher,
    ):
        bodies = await asyncio.gather(*(fetcher.fetch(f"{base}/{i}.jpg") for i in range(8)))
    assert bodies == [b"img"] * 8
    assert state.served == 8
    assert state.peak == 2


async def test_limit_is_per_host_not_global() -> None:
    # One server, two host names for it: each name gets its own allowance.
    state = InFlight()
    async with (
        serve(counting_handler(state, 0.2)) as base,
        ImageFetcher(settings(fetch_per_host_limit=2), MAX_BYTES) as fetcher,
    ):
        port = base.rsplit(":", 1)[1]
        urls = [f"http://127.0.0.1:{port}/{i}" for i in range(4)]
        urls += [f"http://localhost:{port}/{i}" for i in range(4)]
        await asyncio.gather(*(fetcher.fetch(u) for u in urls))
    assert state.peak == 4


# ---- sessions -----------------------------------------------------------------------------


async def test_shared_session_is_left_open(image_server: ImageServer) -> None:
    s = settings()
    url = image_server.add("a.jpg", b"abc")
    session = create_session(s)
    try:
        async with ImageFetcher(s, MAX_BYTES, session=session) as fetcher:
            assert await fetcher.fetch(url) == b"abc"
        assert not session.closed
    finally:
        await session.close()


async def test_shared_session_keeps_its_guard(listener: ConnectionCounter) -> None:
    s = settings(allow_private_image_hosts=False)
    session = create_session(s)
    try:
        fetcher = ImageFetcher(s, MAX_BYTES, session=session)
        with pytest.raises(HostNotAllowed):
            await fetcher.fetch(f"http://localhost:{listener.port}/x")
    finally:
        await session.close()
    assert listener.accepted == 0


async def test_unguarded_session_is_rejected_when_private_hosts_are_refused() -> None:
    async with aiohttp.ClientSession() as plain:
        with pytest.raises(ValueError, match="create_session"):
            ImageFetcher(settings(allow_private_image_hosts=False), MAX_BYTES, session=plain)


async def test_own_session_is_closed(image_server: ImageServer) -> None:
    url = image_server.add("a.jpg", b"abc")
    fetcher = ImageFetcher(settings(), MAX_BYTES)
    assert await fetcher.fetch(url) == b"abc"
    await fetcher.close()
    await fetcher.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        await fetcher.fetch(url)
