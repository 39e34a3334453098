"""Safe image decoding: byte and pixel limits checked before decoding, typed errors, RGB out."""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import threading
from dataclasses import dataclass
from typing import ClassVar

from PIL import Image, ImageOps, UnidentifiedImageError

from models.settings import ImageSettings

ACCEPTED_FORMATS: frozenset[str] = frozenset({"JPEG", "PNG", "WEBP", "GIF"})
# A tuple, because Image.open wants a list or tuple, in a fixed order (commonest first).
_OPEN_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF")
# Pillow reports camera JPEGs with a multi-picture index (most phones) as MPO; same decoder.
_DRAFT_FORMATS = frozenset({"JPEG", "MPO"})
_BACKGROUND = (255, 255, 255)
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
# What Pillow raises from malformed data; anything else is a bug worth seeing.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, KeyError)


class ImageError(Exception):
    """Base of every decode refusal; `code` is a stable machine-readable reason."""

    code: ClassVar[str] = "image_error"


class NotAnImage(ImageError):  # noqa: N818 - names fixed by the module contract
    code = "not_an_image"


class UnsupportedFormat(ImageError):  # noqa: N818 - names fixed by the module contract
    code = "unsupported_format"


class ImageTooLarge(ImageError):  # noqa: N818 - names fixed by the module contract
    code = "image_too_large"


class TooManyPixels(ImageError):  # noqa: N818 - names fixed by the module contract
    code = "too_many_pixels"


class TruncatedImage(ImageError):  # noqa: N818 - names fixed by the module contract
    code = "truncated_image"


class ExtremeAspectRatio(ImageError):  # noqa: N818 - named like its siblings
    code = "extreme_aspect_ratio"


class CropTooSmall(ImageError):  # noqa: N818 - named like its siblings
    code = "crop_too_small"


# A region of a photo smaller than this on a side has too little to recognise.
MIN_CROP_PIXELS = 32


@dataclass(frozen=True)
class Crop:
    """A region of a photo in fractions of its width and height, after EXIF orientation:
    left, top, width, height. Picklable, so that it travels to a decode process."""

    x: float
    y: float
    w: float
    h: float

    def box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """The region in pixels of a width x height image: (left, top, right, bottom)."""
        left, top = round(self.x * width), round(self.y * height)
        right = min(width, round((self.x + self.w) * width))
        bottom = min(height, round((self.y + self.h) * height))
        return left, top, right, bottom


def crop_image(image: Image.Image, crop: Crop) -> Image.Image:
    """The region `crop` of `image`; CropTooSmall under MIN_CROP_PIXELS on a side."""
    left, top, right, bottom = crop.box(*image.size)
    if min(right - left, bottom - top) < MIN_CROP_PIXELS:
        raise CropTooSmall(
            f"the crop is {right - left}x{bottom - top} pixels of this photo; at least "
            f"{MIN_CROP_PIXELS} on each side"
        )
    return image.crop((left, top, right, bottom))


@dataclass(frozen=True)
class ImageLimits:
    """What one image may cost: its encoded size, its decoded pixel count and its shape."""

    max_bytes: int
    max_pixels: int
    # Preprocessing scales the shorter side up to the model's input, so a 1 x 40000 strip would
    # become gigabytes of pixels; no product photo is that thin.
    max_aspect_ratio: float = 20.0

    @classmethod
    def from_settings(cls, s: ImageSettings) -> ImageLimits:
        return cls(max_bytes=s.max_image_bytes, max_pixels=s.max_image_pixels)


def content_hash(data: bytes) -> str:
    """sha256 hex digest of the raw bytes."""
    return hashlib.sha256(data).hexdigest()


_plugins_lock = threading.Lock()
_plugins_ready = False


def _ensure_plugins() -> None:
    # Pillow registers its format plugins lazily through module globals; do it once, under a
    # lock, so that concurrent first decodes never see a half-filled registry.
    global _plugins_ready
    if _plugins_ready:
        return
    with _plugins_lock:
        if not _plugins_ready:
            Image.init()
            _plugins_ready = True


def _sniff_other_format(prefix: bytes) -> str | None:
    """The name of a non-accepted format whose magic bytes `prefix` carries, if any."""
    for name, (_factory, accept) in sorted(Image.OPEN.items()):
        if name in ACCEPTED_FORMATS or accept is None:
            continue
        try:
            matched = accept(prefix)
        except Exception:
            # A magic check that chokes on short input simply means "not this format".
            continue
        if matched and not isinstance(matched, str):
            return name
    return None


def _looks_accepted(prefix: bytes) -> str | None:
    for name in _OPEN_FORMATS:
        entry = Image.OPEN.get(name)
        if entry is None or entry[1] is None:
            continue
        accept = entry[1]
        try:
            matched = accept(prefix)
            if matched and not isinstance(matched, str):
                return name
        except Exception:
            continue
    return None


def _open(data: bytes, limits: ImageLimits) -> Image.Image:
    """Identify the image and read its header only; no pixel is decoded here."""
    _ensure_plugins()
    prefix = data[:16]
    try:
        img = Image.open(io.BytesIO(data), formats=_OPEN_FORMATS)
    except Image.DecompressionBombError as e:
        raise TooManyPixels(f"image refused as a decompression bomb: {e}") from e
    except Image.DecompressionBombWarning as e:
        # Only raised when warnings are turned into errors; the meaning is the same.
        raise TooManyPixels(f"image refused as a decompression bomb: {e}") from e
    except UnidentifiedImageError as e:
        accepted = _looks_accepted(prefix)
        if accepted is not None:
            raise TruncatedImage(f"corrupt {accepted} header") from e
        other = _sniff_other_format(prefix)
        if other is not None:
            raise UnsupportedFormat(
                f"{other} images are not accepted; send JPEG, PNG, WebP or GIF"
            ) from e
        raise NotAnImage("the data is not an image") from e
    except _DECODE_ERRORS as e:
        raise TruncatedImage(f"corrupt image header: {e}") from e
    width, height = img.size
    if width <= 0 or height <= 0:
        raise TruncatedImage(f"image has an empty size {width}x{height}")
    if width * height > limits.max_pixels:
        raise TooManyPixels(
            f"image is {width}x{height} = {width * height} pixels; the limit is {limits.max_pixels}"
        )
    if max(width, height) > limits.max_aspect_ratio * min(width, height):
        raise ExtremeAspectRatio(
            f"image is {width}x{height}; its sides may differ by at most "
            f"{limits.max_aspect_ratio:g}x"
        )
    return img


def _apply_exif_orientation(img: Image.Image) -> None:
    # Broken metadata must not cost a photo its good pixels.
    with contextlib.suppress(Exception):
        ImageOps.exif_transpose(img, in_place=True)


def _to_rgb(img: Image.Image) -> Image.Image:
    """RGB, with any transparency composited on white and 16-bit grey scaled, not clipped."""
    if img.mode in _SIXTEEN_BIT_MODES:
        # Pillow's I;16 -> L conversion clips at 255, which turns most pixels white.
        img = img.convert("I").point(lambda v: v * (1 / 256)).convert("L")
    has_alpha = "A" in img.getbands() or "a" in img.getbands() or "transparency" in img.info
    if has_alpha:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode == "RGB":
        return img
    return img.convert("RGB")


@dataclass(frozen=True)
class ImageProbe:
    """What an image's header says, before any pixel is decoded."""

    format: str
    width: int
    height: int
    # Pixels the decoder will produce: a JPEG decodes at a reduced scale (see decode_image);
    # WebP, PNG and GIF have no reduced-size decoding and cost every pixel.
    decoded_pixels: int


def _draft_scale(width: int, height: int, min_side: int) -> int:
    # libjpeg scales by 1/2, 1/4 or 1/8; Pillow's draft takes the largest of those that still
    # keeps both sides at least min_side (JpegImagePlugin.draft).
    room = min(width // min_side, height // min_side)
    return next((scale for scale in (8, 4, 2) if scale <= room), 1)


def probe_image(data: bytes, limits: ImageLimits, min_side: int | None = None) -> ImageProbe:
    """The format, size and decoding cost of `data`, read from its header only; the same
    ImageError refusals as decode_image for anything over `limits`. Blocking but cheap."""
    _check_bytes(data, limits)
    img = _open(data, limits)
    width, height = img.size
    pixels = width * height
    if img.format in _DRAFT_FORMATS and min_side is not None:
        scale = _draft_scale(width, height, min_side)
        pixels = -(-width // scale) * -(-height // scale)
    return ImageProbe(format=str(img.format), width=width, height=height, decoded_pixels=pixels)


def _check_bytes(data: bytes, limits: ImageLimits) -> None:
    if len(data) > limits.max_bytes:
        raise ImageTooLarge(f"image is {len(data)} bytes; the limit is {limits.max_bytes}")
    if not data:
        raise NotAnImage("the data is empty")


def decode_image(data: bytes, limits: ImageLimits, min_side: int | None = None) -> Image.Image:
    """Decode `data` to an RGB image, EXIF orientation applied, first frame of an animation.

    Refuses, with an ImageError subclass, anything over `limits` before its pixels are decoded.
    With `min_side`, a JPEG is decoded at a reduced scale (1/2, 1/4 or 1/8) whose shorter side
    is still at least `min_side`. Blocking and thread-safe: call it from a worker thread.
    """
    _check_bytes(data, limits)
    if min_side is not None and min_side < 1:
        raise ValueError(f"min_side must be at least 1, got {min_side}")
    img = _open(data, limits)
    try:
        if img.format in _DRAFT_FORMATS and min_side is not None:
            img.draft("RGB", (min_side, min_side))
        img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise TooManyPixels(f"image refused as a decompression bomb: {e}") from e
    except _DECODE_ERRORS as e:
        raise TruncatedImage(f"truncated or corrupt {img.format} data: {e}") from e
    _apply_exif_orientation(img)
    try:
        return _to_rgb(img)
    except _DECODE_ERRORS as e:
        raise TruncatedImage(f"cannot convert {img.format} pixels from mode {img.mode}: {e}") from e


def fit_image(image: Image.Image, size: int, crop_padding: int = 0) -> Image.Image:
    """The RGB (size, size) centre crop of `image` after its shorter side is resized to
    size + crop_padding; an image already fitted is returned as is."""
    img = image if image.mode == "RGB" else image.convert("RGB")
    w, h = img.size
    if w == h == size:
        return img
    short = size + crop_padding
    scale = short / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    left, top = (nw - size) // 2, (nh - size) // 2
    # Resampled straight into the centre crop: `box` is the crop's region in the source, so only
    # the pixels kept are computed (the filter still reads the pixels around the box). Equal to
    # resizing all of it and cropping within 1/255 per pixel, in ~55% of the time.
    sx, sy = w / nw, h / nh
    box = (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
    # reducing_gap lets Pillow shrink big phone photos by cheap integer reduction first.
    return img.resize((size, size), Image.Resampling.BICUBIC, box=box, reducing_gap=3.0)


def decode_fitted(
    data: bytes, limits: ImageLimits, size: int, crop_padding: int = 0, crop: Crop | None = None
) -> Image.Image:
    """`data` decoded within `limits`, cut to `crop` when given, and fitted to the model's
    (size, size) input. A plain function of picklable arguments, so that it runs in a decode
    process as well as a thread."""
    min_side = size + crop_padding
    if crop is None:
        return fit_image(decode_image(data, limits, min_side), size, crop_padding)
    # A JPEG decodes at reduced scale only as far as the region still fills the model's input.
    region_side = math.ceil(min_side / max(min(crop.w, crop.h), 1e-3))
    image = crop_image(decode_image(data, limits, region_side), crop)
    return fit_image(image, size, crop_padding)
