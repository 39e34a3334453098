"""The worker's HTTP port: /healthz, /readyz and /metrics, served while the worker runs.

A small aiohttp app, run as a mode service of the Faust worker (which starts it before the app
and stops it after), rather than Faust's own web server: that one serves Faust's views besides
(/, /router, /table, /stats), is started by the app's boot strategy only in its server role,
and takes its routes as Faust View classes; three aiohttp handlers are simpler, and testable
without a Faust app. A crashed app stops the worker process, and the port with it; the embedded
stack (`lookalike dev`) reads the same WorkerHealth in its own /readyz instead
(lookalike.health)."""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import web
from mode import Service
from prometheus_client import CONTENT_TYPE_LATEST

from stream.health import WorkerHealth
from stream.metrics import WorkerMetrics

log = structlog.get_logger("stream.status")

HEALTH = web.AppKey("health", WorkerHealth)
METRICS = web.AppKey("metrics", WorkerMetrics)


async def healthz(request: web.Request) -> web.Response:
    # The process answers: liveness only. Whether it indexes is /readyz.
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    verdict = request.app[HEALTH].check()
    return web.json_response(verdict.body(), status=200 if verdict.ready else 503)


async def metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def status_app(health: WorkerHealth, worker_metrics: WorkerMetrics) -> web.Application:
    app = web.Application()
    app[HEALTH] = health
    app[METRICS] = worker_metrics
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


class StatusServer(Service):
    """Serves `status_app` on host:port while the worker runs (port 0: any free port)."""

    def __init__(
        self, health: WorkerHealth, worker_metrics: WorkerMetrics, host: str, port: int, **kw: Any
    ) -> None:
        super().__init__(**kw)
        self._app = status_app(health, worker_metrics)
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self.url: str | None = None

    async def on_start(self) -> None:
        runner = web.AppRunner(self._app, access_log=None)
        await runner.setup()
        self._runner = runner
        await web.TCPSite(runner, self._host, self._port).start()
        host, port = runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        log.info("worker_status_serving", url=self.url)

    async def on_stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
