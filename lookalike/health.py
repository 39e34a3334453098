"""The embedded stack's worker in its API's /readyz and /metrics (`lookalike dev`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from query.keys import METRICS
from stream.health import WorkerHealth
from stream.metrics import WorkerMetrics


class _Included(Collector):
    """Another registry's metrics, collected with this one's."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def describe(self) -> Iterator[Metric]:
        # No names to check: the worker's are all lookalike_indexer_*, which the API never uses.
        return iter(())

    def collect(self) -> Iterator[Metric]:
        return iter(self._registry.collect())


def _json_object(raw: object) -> dict[str, Any]:
    """The API's readiness body as an object, or an empty one if it is not one."""
    try:
        value = json.loads(raw) if isinstance(raw, bytes) else None
    except ValueError:
        value = None
    return value if isinstance(value, dict) else {}


def _worker_readiness(health: WorkerHealth) -> Middleware:
    """/readyz of the stack: the API's answer, and 503 while the worker is not ready."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        if request.path != "/readyz" or not isinstance(response, web.Response):
            return response
        # The API is ready (else its handler raised its own 503, answered as it is).
        verdict = health.check()
        body = _json_object(response.body)
        body["worker"] = verdict.body()
        if verdict.ready:
            return web.json_response(body, status=response.status)
        message = f"the indexer worker is not ready: {verdict.reason}"
        error = {"code": "not_ready", "message": message}
        return web.json_response({"error": error, "worker": verdict.body()}, status=503)

    return middleware


def include_worker(app: web.Application, health: WorkerHealth, metrics: WorkerMetrics) -> None:
    """Make the query app `app` answer for the worker in the same process too: its /readyz is
    503 while the worker is not ready (with the worker's reason), and its /metrics carry the
    worker's. Call before the app starts."""
    app[METRICS].registry.register(_Included(metrics.registry))
    # Inside the API's error middleware, so the request metrics see the final status.
    app.middlewares.append(_worker_readiness(health))
