"""The outermost middleware: every failure becomes a JSON error, every answer is measured."""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler, Middleware

from models.fetch import FetchError
from models.images import ImageError
from query.errors import (
    ApiError,
    OverloadedError,
    error_response,
    from_client_error,
    from_fetch_error,
    from_image_error,
)
from query.metrics import ApiMetrics

log = logging.getLogger(__name__)

_HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}
# What aiohttp raises about the bytes the client sent, wherever they are read: its HTTP and
# multipart parsers, and the payload stream (content decoding). Always the client's fault.
_CLIENT_ERRORS = (HttpProcessingError, web.RequestPayloadError)
# nginx's "client closed request": the client hung up before it could be answered.
CLIENT_CLOSED = 499


class _ClientGoneError(Exception):
    """The client hung up; there is nobody to answer."""


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def _http_error(exc: web.HTTPException) -> web.Response:
    headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
    code = _HTTP_CODES.get(exc.status, f"http_{exc.status}")
    return error_response(exc.status, code, exc.reason, headers=headers)


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _abandon_body(request: web.Request, response: web.StreamResponse) -> None:
    """After a body that did not parse: nothing more is read of it, and the connection closes.
    Marked ended, because aiohttp drains an unread body after the answer and would raise its
    stored parse error again there, logged as an unhandled exception."""
    if request.content.exception() is not None:
        request.content.feed_eof()
    response.force_close()


def _as_api_error(exc: Exception, metrics: ApiMetrics, detailed: bool) -> ApiError | None:
    """The answer to a failure that is not a bug, or None for a bug."""
    if isinstance(exc, ApiError):
        if isinstance(exc, OverloadedError):
            metrics.shed.labels(exc.stage).inc()
        return exc
    if isinstance(exc, ImageError):
        return from_image_error(exc)
    if isinstance(exc, FetchError):
        metrics.image_url_failures.labels(exc.reason).inc()
        # The client gets a generic answer; the detail is the operator's.
        log.info("image_url failed: reason=%s detail=%s", exc.reason, exc)
        return from_fetch_error(exc, detailed=detailed)
    if isinstance(exc, _CLIENT_ERRORS):
        return from_client_error(exc)
    return None


async def _answer(
    request: web.Request, handler: Handler, metrics: ApiMetrics, detailed: bool
) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _http_error(exc)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        # A hang-up mid-body surfaces as a reset or as a body cut short: either way, nobody is
        # left to answer, and it is no error of the service.
        if isinstance(exc, (ConnectionError, *_CLIENT_ERRORS)) and _client_gone(request):
            raise _ClientGoneError from None
        api_error = _as_api_error(exc, metrics, detailed)
        if api_error is not None:
            response = error_response(
                api_error.status,
                api_error.code,
                api_error.message,
                headers=api_error.headers,
                **api_error.details,
            )
            if isinstance(exc, _CLIENT_ERRORS):
                _abandon_body(request, response)
            return response
        # The last resort: a bug. Logged with its trace here, never shown to the client.
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(500, "internal", "internal error; it has been logged")


def error_middleware(metrics: ApiMetrics, *, detailed_fetch_errors: bool = False) -> Middleware:
    """JSON errors for everything, and the request-latency histogram by route and status.
    `detailed_fetch_errors` shows clients why an image_url failed (development only)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        start = time.perf_counter()
        status = 500
        try:
            response = await _answer(request, handler, metrics, detailed_fetch_errors)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except _ClientGoneError:
            status = CLIENT_CLOSED
            log.info("client disconnected: %s %s", request.method, request.path)
            # Nothing can be written to a closed connection; aiohttp drops this quietly.
            return web.Response(status=CLIENT_CLOSED)
        except asyncio.CancelledError:
            # A server run with handler_cancellation cancels the handler of a client that left.
            if _client_gone(request):
                status = CLIENT_CLOSED
                log.info("client disconnected: %s %s", request.method, request.path)
            raise
        finally:
            metrics.request_seconds.labels(_route(request), request.method, str(status)).observe(
                time.perf_counter() - start
            )

    return middleware
