"""The search page: GET / and its static files, served from query/static with a strict CSP."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType

from aiohttp import web

STATIC_DIR = Path(__file__).parent / "static"

# Served by name with a fixed type, so the page never depends on the host's mime.types; any other
# path under /static/ is a 404.
STATIC_FILES = MappingProxyType(
    {
        "app.js": "text/javascript; charset=utf-8",
        "api.js": "text/javascript; charset=utf-8",
        "style.css": "text/css; charset=utf-8",
    }
)

# Nothing from elsewhere but listing photos, which live on the marketplace's image hosts.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob: https: http:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)


def _headers(content_type: str) -> dict[str, str]:
    return {
        "Content-Type": content_type,
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        # Revalidated on every load (ETag, Last-Modified): a new release shows up at once.
        "Cache-Control": "no-cache",
    }


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers=_headers("text/html; charset=utf-8"))


async def static_file(request: web.Request) -> web.FileResponse:
    name = request.match_info["name"]
    content_type = STATIC_FILES.get(name)
    if content_type is None:
        raise web.HTTPNotFound()
    return web.FileResponse(STATIC_DIR / name, headers=_headers(content_type))


def add_page_routes(app: web.Application) -> None:
    """GET / (the page) and GET /static/{name} (its script and style)."""
    app.router.add_get("/", index)
    app.router.add_get("/static/{name}", static_file)
