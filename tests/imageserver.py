"""A real HTTP server on loopback that serves image bytes and records every request it gets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class Route:
    """What one path answers: a body, or a status, after an optional delay, maybe a redirect."""

    body: bytes = b""
    status: int = 200
    content_type: str = "image/jpeg"
    delay_s: float = 0.0
    redirect_to: str | None = None
    # Answer with this status for the first N requests, then normally (retry tests).
    fail_first: int = 0
    fail_status: int = 503


@dataclass
class ImageServer:
    """Routes by path; `requests` lists every path asked for, in order."""

    host: str = "127.0.0.1"
    port: int = 0
    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}/{path.lstrip('/')}"

    def add(self, path: str, body: bytes = b"", **kw: object) -> str:
        """Serve `body` at `path`; returns its URL."""
        self.routes["/" + path.lstrip("/")] = Route(body=body, **kw)  # type: ignore[arg-type]
        return self.url(path)

    def count(self, path: str) -> int:
        return self.requests.count("/" + path.lstrip("/"))

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        self.requests.append(path)
        route = self.routes.get(path)
        if route is None:
            return web.Response(status=404, text="not found")
        if route.delay_s:
            await asyncio.sleep(route.delay_s)
        if route.fail_first > 0:
            route.fail_first -= 1
            return web.Response(status=route.fail_status, text="try again")
        if route.redirect_to is not None:
            raise web.HTTPFound(route.redirect_to)
        return web.Response(status=route.status, body=route.body, content_type=route.content_type)


@asynccontextmanager
async def serve_images(host: str = "127.0.0.1") -> AsyncIterator[ImageServer]:
    """Start an ImageServer on a free port of `host`; stop it on exit."""
    server = ImageServer(host=host)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server._handle)
    # A route that hangs (a stalled photo host) must not hold the cleanup for aiohttp's 60 s.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    server.port = runner.addresses[0][1]
    try:
        yield server
    finally:
        await runner.cleanup()
