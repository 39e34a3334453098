"""Running the query service as a process: `python -m query` and `lookalike api` call run_api."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from query.app import create_app
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


async def serve(settings: ApiSettings) -> None:
    """Serve until SIGINT or SIGTERM, then close every resource."""
    runner, url = await start_site(create_app(settings), settings.host, settings.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"api: {url}/", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def run_api(settings: ApiSettings) -> None:
    """The blocking entry point of the API process."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(serve(settings))
