"""Running the query service as a process: `python -m query` and `lookalike api` call run_api."""

from __future__ import annotations

import asyncio
import signal

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from query.app import create_app
from query.keys import METRICS
from query.metrics import ApiMetrics
from query.settings import ApiSettings

# aiohttp answers a request line it cannot parse itself, in plain text, before any middleware.
# Every request the OpenAPI schema allows (100 excluded ids of 200 characters, percent-encoded)
# must fit, so that such answers only reach clients that ignored the schema.
MAX_REQUEST_LINE = 512 * 1024
MAX_HEADER_FIELD = 16 * 1024


async def start_site(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, str]:
    """Start `app` listening on host:port (0 picks a free port); returns its runner and base URL.
    The caller stops it with `await runner.cleanup()`."""
    runner = web.AppRunner(
        app, access_log=None, max_line_size=MAX_REQUEST_LINE, max_field_size=MAX_HEADER_FIELD
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound_host, bound_port = runner.addresses[0][:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    return runner, f"http://{shown}:{bound_port}"


def metrics_app(metrics: ApiMetrics) -> web.Application:
    """/metrics alone, for a port that only the monitoring network reaches."""

    async def exposition(request: web.Request) -> web.Response:
        body = metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", exposition)
    return app


async def serve(settings: ApiSettings) -> None:
    """Serve until SIGINT or SIGTERM, then close every resource."""
    app = create_app(settings)
    runner, url = await start_site(app, settings.host, settings.port)
    runners = [runner]
    try:
        if settings.metrics_port is not None:
            metrics_runner, metrics_url = await start_site(
                metrics_app(app[METRICS]), settings.host, settings.metrics_port
            )
            runners.append(metrics_runner)
            print(f"metrics: {metrics_url}/metrics", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        print(f"api: {url}/", flush=True)
        await stop.wait()
    finally:
        for each in reversed(runners):
            await each.cleanup()


def run_api(settings: ApiSettings) -> None:
    """The blocking entry point of the API process."""
    asyncio.run(serve(settings))
