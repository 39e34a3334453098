"""A search request's photo from its body: multipart, base64 JSON or a URL; size-capped."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from aiohttp import BodyPartReader, web

from models.images import Crop
from query.errors import ApiError, shown
from query.params import checked_crop

CHUNK = 64 * 1024


@dataclass(frozen=True)
class PhotoSource:
    """Exactly one of: the photo's bytes, or a URL to fetch them from; and the region of it to
    search, when a JSON body names one."""

    data: bytes | None = None
    url: str | None = None
    crop: Crop | None = None


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "body_too_large", f"the request body is over {limit} bytes")


def _check_declared_length(request: web.Request, limit: int) -> None:
    # Refuse before reading anything when the client says up front that it is too big.
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)


async def _read_limited(request: web.Request, limit: int) -> bytes:
    _check_declared_length(request, limit)
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = await request.content.read(CHUNK)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > limit:
            raise _too_large(limit)
        chunks.append(chunk)


def _malformed(exc: Exception) -> ApiError:
    return ApiError(400, "bad_multipart", f"malformed multipart body: {str(exc)[:120]}")


async def _read_multipart(request: web.Request, limit: int) -> PhotoSource:
    _check_declared_length(request, limit)
    try:
        reader = await request.multipart()
    except (ValueError, AssertionError, KeyError) as exc:
        raise _malformed(exc) from None
    total = 0
    image: bytes | None = None
    try:
        while True:
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, BodyPartReader):
                raise ApiError(400, "bad_multipart", "nested multipart bodies are not accepted")
            if part.name != "image":
                name = shown(part.name or "")
                message = f"unknown form field {name}; send only 'image'"
                raise ApiError(400, "unknown_field", message)
            if image is not None:
                raise ApiError(400, "bad_multipart", "send exactly one 'image' field")
            chunks: list[bytes] = []
            while chunk := await part.read_chunk(CHUNK):
                total += len(chunk)
                if total > limit:
                    raise _too_large(limit)
                chunks.append(chunk)
            image = b"".join(chunks)
    except ApiError:
        raise
    except (ValueError, AssertionError, RuntimeError, LookupError) as exc:
        raise _malformed(exc) from None
    if image is None:
        raise ApiError(400, "missing_image", "the form has no 'image' field")
    return PhotoSource(data=image)


def _parse_json(body: bytes) -> PhotoSource:
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        raise ApiError(400, "bad_json", "the body is not valid JSON") from None
    if not isinstance(doc, dict):
        raise ApiError(400, "bad_json", "the body must be a JSON object")
    unknown = sorted(set(doc) - {"image_base64", "image_url", "crop"})
    if unknown:
        raise ApiError(
            400,
            "unknown_field",
            f"unknown field {shown(str(unknown[0]))}"
            + (f" and {len(unknown) - 1} more" if len(unknown) > 1 else "")
            + "; filters and k are query parameters",
        )
    if ("image_base64" in doc) == ("image_url" in doc):
        raise ApiError(400, "missing_image", "send exactly one of image_base64 and image_url")
    crop = _json_crop(doc["crop"]) if "crop" in doc else None
    if "image_url" in doc:
        url = doc["image_url"]
        if not isinstance(url, str) or not url.strip():
            raise ApiError(400, "bad_url", "image_url must be a non-empty string")
        return PhotoSource(url=url.strip(), crop=crop)
    encoded = doc["image_base64"]
    if not isinstance(encoded, str) or not encoded:
        raise ApiError(400, "bad_base64", "image_base64 must be a non-empty string")
    # A data: URL prefix is what browsers' FileReader produces; accept it.
    if encoded.startswith("data:") and "," in encoded:
        encoded = encoded.split(",", 1)[1]
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "bad_base64", "image_base64 is not valid base64") from None
    return PhotoSource(data=data, crop=crop)


def _json_crop(value: object) -> Crop:
    """ "crop": [x, y, w, h], the JSON spelling of the crop query parameter."""
    # bool is an int to Python, but true is no fraction of a photo.
    if (
        not isinstance(value, list)
        or len(value) != 4
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    ):
        raise ApiError(
            400,
            "bad_parameter",
            "crop: must be [x, y, w, h], four numbers, fractions of the photo",
            parameter="crop",
        )
    x, y, w, h = (float(v) for v in value)
    return checked_crop(x, y, w, h)


async def read_photo(
    request: web.Request, max_upload_bytes: int, max_json_bytes: int
) -> PhotoSource:
    """The photo a search request carries; 415 for a body kind other than multipart or JSON."""
    content_type = request.content_type
    if content_type == "multipart/form-data":
        return await _read_multipart(request, max_upload_bytes)
    if content_type == "application/json":
        return _parse_json(await _read_limited(request, max_json_bytes))
    raise ApiError(
        415,
        "unsupported_media_type",
        "send the photo as multipart/form-data (field 'image') or as application/json "
        "(image_base64 or image_url)",
    )
