"""The outermost middleware: every failure becomes a JSON error, every answer is measured."""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from models.fetch import FetchError
from models.images import ImageError
from query.errors import ApiError, error_response, from_fetch_error, from_image_error
from query.metrics import ApiMetrics

log = logging.getLogger(__name__)

_HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def _http_error(exc: web.HTTPException) -> web.Response:
    headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
    code = _HTTP_CODES.get(exc.status, f"http_{exc.status}")
    return error_response(exc.status, code, exc.reason, headers=headers)


async def _answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, **exc.details)
    except ImageError as exc:
        return _answer_api_error(from_image_error(exc))
    except FetchError as exc:
        return _answer_api_error(from_fetch_error(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _http_error(exc)
    except asyncio.CancelledError:
        raise
    except Exception:
        # The last resort: a bug. Logged with its trace here, never shown to the client.
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(500, "internal", "internal error; it has been logged")


def _answer_api_error(exc: ApiError) -> web.Response:
    return error_response(exc.status, exc.code, exc.message, **exc.details)


def error_middleware(metrics: ApiMetrics) -> Middleware:
    """JSON errors for everything, and the request-latency histogram by route and status."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        start = time.perf_counter()
        status = 500
        try:
            response = await _answer(request, handler)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            metrics.request_seconds.labels(_route(request), request.method, str(status)).observe(
                time.perf_counter() - start
            )

    return middleware
