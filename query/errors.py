"""API errors: one exception type, and the mapping of every other failure to a status and code."""

from __future__ import annotations

import math
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from models.fetch import BadURL, FetchError
from models.images import ImageError, ImageTooLarge, NotAnImage, UnsupportedFormat

# An error message quotes at most this much of what the client sent: a hostile 400 KB query
# string must not come back as a 300 KB answer.
SHOWN_CHARS = 40


class ApiError(Exception):
    """An answer other than success: an HTTP status, a short machine code and a human message."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        **details: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers
        self.details = details


class OverloadedError(ApiError):
    """The request could not start within the queue budget: a fast 503 with Retry-After."""

    def __init__(self, retry_after_s: float, stage: str) -> None:
        seconds = max(1, min(30, math.ceil(retry_after_s)))
        super().__init__(
            503,
            "overloaded",
            f"the service is at capacity; retry in {seconds} s",
            headers={"Retry-After": str(seconds)},
        )
        self.stage = stage


def shown(text: str, limit: int = SHOWN_CHARS) -> str:
    """`text` as an error message may quote it: repr'd, and cut to `limit` characters."""
    if len(text) <= limit:
        return repr(text)
    return repr(text[:limit]) + f"… ({len(text)} characters)"


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, **details: Any
) -> web.Response:
    """The one shape every error takes: {"error": {"code", "message", ...}}."""
    return web.json_response(
        {"error": {"code": code, "message": message, **details}}, status=status, headers=headers
    )


def from_image_error(exc: ImageError) -> ApiError:
    """Bytes that are not an acceptable image: 415 for the wrong kind, 413 too big, 422 broken."""
    if isinstance(exc, NotAnImage | UnsupportedFormat):
        status = 415
    elif isinstance(exc, ImageTooLarge):
        status = 413
    else:
        status = 422
    return ApiError(status, exc.code, str(exc))


def from_fetch_error(exc: FetchError, *, detailed: bool) -> ApiError:
    """An image_url that could not be used. A URL refused on its spelling alone is a 400; every
    failure that depends on the network is one generic 422, so that the answers cannot map which
    internal hosts and ports exist. With `detailed` (private hosts allowed: development) the
    reason and detail are shown too."""
    if isinstance(exc, BadURL):
        return ApiError(400, "bad_url", str(exc))
    details: dict[str, Any] = {"reason": exc.reason, "detail": str(exc)} if detailed else {}
    return ApiError(
        422, "image_url_failed", "the image at image_url could not be fetched", **details
    )


def from_client_error(exc: HttpProcessingError | web.RequestPayloadError) -> ApiError:
    """aiohttp's own parsers refused what the client sent (a header line too long or without a
    colon, too many part headers, a body that does not decode as its Content-Encoding says)."""
    if isinstance(exc, HttpProcessingError):
        reason = exc.message.splitlines()[0] if exc.message else type(exc).__name__
        status = 413 if exc.code == 413 else 400
    else:
        reason = str(exc) or type(exc).__name__
        status = 400
    return ApiError(status, "bad_request", f"the request is malformed: {reason[:120]}")
