"""API errors: one exception type and the mapping of library errors to status codes."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from models.fetch import BadURL, FetchError, HostNotAllowed, ResponseTooLarge
from models.images import ImageError, ImageTooLarge, NotAnImage, UnsupportedFormat


class ApiError(Exception):
    """An answer other than success: an HTTP status, a short machine code and a human message."""

    def __init__(self, status: int, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


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


def from_fetch_error(exc: FetchError) -> ApiError:
    """An image_url that could not be fetched: the URL is refused (400), the image is too big (413),
    or the remote end failed (422: the request was understood but its image is unavailable)."""
    if isinstance(exc, ResponseTooLarge):
        return ApiError(413, "image_too_large", str(exc))
    if isinstance(exc, HostNotAllowed):
        return ApiError(400, "host_not_allowed", str(exc))
    if isinstance(exc, BadURL):
        return ApiError(400, "bad_url", str(exc))
    return ApiError(422, "image_url_failed", str(exc), reason=exc.reason)
