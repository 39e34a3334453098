"""The worker's /healthz, /readyz and /metrics against a real broker, store and image server: a
healthy worker is ready and counts each outcome it produced; a worker that is gone from the dev
stack, or whose broker is gone, is 503 within 15 s, with the reason. (A crash of the Faust app
itself is left to the unit tests: embedded, faust-streaming cannot stop a crashed app cleanly.)"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from lookalike.health import include_worker
from models.embedder import AsyncEmbedder, Embedder
from models.settings import ModelSettings
from query.keys import METRICS
from query.metrics import ApiMetrics
from stream.broker import DevBroker, free_port
from stream.health import HealthPolicy, WorkerHealth
from stream.resources import WorkerResources
from stream.settings import WorkerSettings
from stream.worker import running_worker
from tests.imageserver import ImageServer
from tests.stream_support import (
    REPO,
    Harness,
    deletion,
    fresh_topics,
    generated_photo,
    listing,
    wait_until,
    worker_env,
    worker_settings,
)

pytestmark = pytest.mark.slow

UNREADY_WITHIN_S = 15.0
READY_WITHIN_S = 60.0


@pytest.fixture(scope="module")
def embedder() -> Iterator[Embedder]:
    yield Embedder.from_settings(ModelSettings(device="cpu", embed_batch_size=4))


async def _get(url: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
        session.get(url) as response,
    ):
        body = await (
            response.json() if response.content_type == "application/json" else response.text()
        )
        return response.status, body


async def _wait_status(url: str, status: int, within_s: float) -> tuple[Any, float]:
    """The body of the first answer of `url` with `status`, and how long it took to come."""
    started = time.monotonic()
    last: object = None
    while (took := time.monotonic() - started) < within_s:
        try:
            got, body = await _get(url)
            if got == status:
                return body, took
            last = (got, body)
        except aiohttp.ClientError as exc:
            last = exc
        await asyncio.sleep(0.2)
    raise AssertionError(f"{url} did not answer {status} within {within_s} s; last: {last!r}")


def _samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


@asynccontextmanager
async def _served(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


def _stand_in_api() -> web.Application:
    """What include_worker needs of the query app: its metrics registry, /readyz and /metrics."""

    async def readyz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ready"})

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(request.app[METRICS].registry))

    app = web.Application()
    app[METRICS] = ApiMetrics()
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


async def test_a_healthy_worker_is_ready_and_counts_each_outcome_a_stopped_one_is_not(
    broker: DevBroker, embedder: Embedder, image_server: ImageServer, tmp_path: Path
) -> None:
    port = free_port()
    settings = worker_settings(
        broker, fresh_topics(), tmp_path, worker_port=port, max_retries=1, retry_delay_s=0.0
    )
    photo = image_server.add("ok.jpg", generated_photo(1))
    flaky = image_server.add("flaky.jpg", status=503)  # transient: a retry round, then the DLQ
    base = f"http://127.0.0.1:{port}"
    health = WorkerHealth(HealthPolicy.from_settings(settings.stream))
    resources = await WorkerResources.around(settings, AsyncEmbedder(embedder), owned=False)
    # The dev stack's view of the same worker: the API's /readyz and /metrics include it.
    stack = _stand_in_api()
    include_worker(stack, health, resources.metrics)
    try:
        async with _served(stack) as stack_url:
            async with running_worker(settings, resources, health):
                harness = Harness(settings, resources, broker)
                try:
                    await _healthy_and_counting(harness, base, stack_url, photo, flaky)
                finally:
                    harness.publisher.close()
            # The worker is gone (stopped, as a crash stops it); the stack's API still answers.
            unready, _ = await _wait_status(f"{stack_url}/readyz", 503, UNREADY_WITHIN_S)
            assert unready["error"]["code"] == "not_ready", unready
            assert unready["worker"]["ready"] is False, unready
            assert "stopped" in unready["worker"]["reason"], unready
            assert "stopped" in unready["error"]["message"], unready
            with pytest.raises(aiohttp.ClientError):
                await _get(f"{base}/readyz")  # its own port went with it
    finally:
        await resources.close()


async def _healthy_and_counting(
    harness: Harness, base: str, stack_url: str, photo: str, flaky: str
) -> None:
    settings = harness.settings
    body, _ = await _wait_status(f"{base}/healthz", 200, READY_WITHIN_S)
    assert body == {"status": "ok"}
    harness.publish(
        listing("A", 1, [photo]),  # indexed
        listing("A", 2, [photo], amount="20.00"),  # payload_only
        listing("A", 1, [photo]),  # stale
        deletion("B", 1),  # deleted
        listing("C", 1, [flaky]),  # retried, then dead_lettered
    )
    harness.publish_raw(b"D", b"{not json")  # dead_lettered
    expected = {
        "indexed": 1,
        "payload_only": 1,
        "stale": 1,
        "deleted": 1,
        "retried": 1,
        "dead_lettered": 2,
    }

    async def counted() -> dict[str, float]:
        _, text = await _get(f"{base}/metrics")
        events = _samples(text, "lookalike_indexer_events_total")
        return {dict(k)["outcome"]: v for k, v in events.items()}

    async def all_counted() -> bool:
        return sum((await counted()).values()) >= sum(expected.values())

    await wait_until(all_counted, READY_WITHIN_S, "every outcome")
    assert await counted() == expected

    _, text = await _get(f"{base}/metrics")
    dead = _samples(text, "lookalike_indexer_dead_letters_total")
    assert {dict(k)["reason"] for k in dead} == {"images_unavailable", "not_json"}
    assert _samples(text, "lookalike_indexer_images_fetched_total")[()] == 1
    failed = _samples(text, "lookalike_indexer_images_failed_total")
    assert failed[(("reason", "http_status"),)] == 2  # one per round
    assert _samples(text, "lookalike_indexer_freshness_seconds_count")[()] == 3
    lags = _samples(text, "lookalike_indexer_consumer_lag")
    assert {dict(k)["topic"] for k in lags} >= {settings.broker.topic}

    ready, _ = await _wait_status(f"{base}/readyz", 200, READY_WITHIN_S)
    assert ready["ready"] is True and ready["reason"] is None, ready
    assert ready["partitions"], ready
    stack_ready, _ = await _wait_status(f"{stack_url}/readyz", 200, 5)
    assert stack_ready["worker"]["ready"] is True
    _, stack_text = await _get(f"{stack_url}/metrics")
    stack_events = _samples(stack_text, "lookalike_indexer_events_total")
    assert stack_events[(("outcome", "indexed"),)] == 1


def _lookalike_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """`lookalike worker`, as compose runs it."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "lookalike", "worker"],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


@pytest.fixture
def own_broker() -> Iterator[DevBroker]:
    """A broker of this test alone: it is killed."""
    with DevBroker() as started:
        yield started


async def test_a_worker_whose_broker_is_gone_is_unready_within_15_s(
    own_broker: DevBroker, tmp_path: Path
) -> None:
    settings: WorkerSettings = worker_settings(own_broker, fresh_topics(), tmp_path)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**worker_env(settings), "LOOKALIKE_WORKER_PORT": str(port)}
    worker = _lookalike_worker(env, tmp_path / "worker.log")
    try:
        ready, _ = await _wait_status(f"{base}/readyz", 200, READY_WITHIN_S)
        assert ready["ready"] is True, ready
        own_broker.kill()
        unready, _ = await _wait_status(f"{base}/readyz", 503, UNREADY_WITHIN_S)
        assert unready["ready"] is False
        assert "broker" in unready["reason"] or "partitions" in unready["reason"], unready
        assert worker.poll() is None, "the worker rides out its broker: it keeps running"
        status, _ = await _get(f"{base}/healthz")
        assert status == 200
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=15)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(timeout=10)
