"""Decoding real and crafted images: formats, modes, orientation, limits, damage, draft, threads."""

from __future__ import annotations

import hashlib
import io
import random
import struct
import time
import warnings
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache

import numpy as np
import pytest
from PIL import Image, ImageFile, ImageSequence

from models.images import (
    ACCEPTED_FORMATS,
    ExtremeAspectRatio,
    ImageError,
    ImageLimits,
    ImageTooLarge,
    NotAnImage,
    TooManyPixels,
    TruncatedImage,
    UnsupportedFormat,
    content_hash,
    decode_image,
)
from models.settings import ImageSettings
from tests.photos import PHOTO_FILES, jpeg_bytes, photo, photo_bytes

LIMITS = ImageLimits(max_bytes=20 * 1024 * 1024, max_pixels=40_000_000)


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    img.save(out, format=fmt, **params)
    return out.getvalue()


def pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), dtype=np.int16)


def reference(data: bytes) -> Image.Image:
    """What plain Pillow decodes, without any of decode_image's handling."""
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def png_with_size(width: int, height: int) -> bytes:
    """A tiny real PNG whose IHDR claims `width`x`height`, its CRC fixed so the header is valid."""
    data = bytearray(encode(Image.new("RGB", (8, 8), (10, 20, 30)), "PNG"))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


@cache
def large_jpeg() -> bytes:
    return jpeg_bytes(photo("astronaut").resize((4000, 3000), Image.Resampling.BILINEAR), 90)


# ---- accepted formats -------------------------------------------------------------------


def test_accepted_formats_are_the_four_web_formats() -> None:
    assert frozenset({"JPEG", "PNG", "WEBP", "GIF"}) == ACCEPTED_FORMATS


@pytest.mark.parametrize("name", sorted(PHOTO_FILES))
def test_real_photos_decode_to_rgb_with_their_pixels(name: str) -> None:
    data = photo_bytes(name)
    img = decode_image(data, LIMITS)
    ref = reference(data)
    assert img.mode == "RGB"
    assert img.size == ref.size
    assert np.array_equal(pixels(img), pixels(ref))


@pytest.mark.parametrize(
    ("fmt", "params"),
    [("PNG", {}), ("WEBP", {"lossless": True}), ("JPEG", {"quality": 90})],
)
def test_photo_round_trips_through_each_format(fmt: str, params: dict[str, object]) -> None:
    original = photo("coffee")
    img = decode_image(encode(original, fmt, **params), LIMITS)
    assert img.mode == "RGB"
    assert img.size == original.size
    error = np.abs(pixels(img) - pixels(original)).mean()
    assert error < (3.0 if fmt == "JPEG" else 0.01)


def test_gif_photo_decodes_to_its_palette_colours() -> None:
    data = encode(photo("chelsea"), "GIF")
    img = decode_image(data, LIMITS)
    assert img.mode == "RGB"
    assert img.size == photo("chelsea").size
    assert np.array_equal(pixels(img), pixels(reference(data)))


def test_animated_gif_gives_its_first_frame() -> None:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    frames = [Image.new("RGB", (32, 24), c) for c in colours]
    data = encode(frames[1], "GIF", save_all=True, append_images=[frames[0], frames[2]])
    assert sum(1 for _ in ImageSequence.Iterator(Image.open(io.BytesIO(data)))) == 3
    img = decode_image(data, LIMITS)
    assert img.size == (32, 24)
    assert img.getpixel((5, 5)) == (0, 255, 0)


def test_animated_webp_gives_its_first_frame() -> None:
    colours = [(0, 0, 255), (255, 0, 0), (0, 255, 0)]
    frames = [Image.new("RGB", (32, 24), c) for c in colours]
    data = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    assert sum(1 for _ in ImageSequence.Iterator(Image.open(io.BytesIO(data)))) == 3
    img = decode_image(data, LIMITS)
    assert img.getpixel((5, 5)) == (0, 0, 255)


# ---- orientation and modes ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("orientation", "transpose"),
    [
        (3, Image.Transpose.ROTATE_180),
        (6, Image.Transpose.ROTATE_270),
        (8, Image.Transpose.ROTATE_90),
    ],
)
def test_exif_orientation_is_applied(orientation: int, transpose: Image.Transpose) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(photo("rocket"), "JPEG", exif=exif.tobytes(), quality=90)
    stored = reference(data)
    img = decode_image(data, LIMITS)
    expected = stored.transpose(transpose)
    assert img.size == expected.size
    if orientation in (6, 8):
        assert img.size == (stored.height, stored.width)
    assert np.array_equal(pixels(img), pixels(expected))


@pytest.mark.filterwarnings("ignore:Corrupt EXIF")
def test_broken_exif_does_not_reject_good_pixels() -> None:
    good = encode(photo("rocket"), "JPEG", quality=90)
    junk = b"Exif\x00\x00" + b"MM\x00\x2a\x00\x00\x00\x08\xff\xff" + bytes(range(200))
    app1 = b"\xff\xe1" + struct.pack(">H", len(junk) + 2) + junk
    data = good[:2] + app1 + good[2:]
    img = decode_image(data, LIMITS)
    assert img.size == photo("rocket").size


def test_transparent_pixels_become_white() -> None:
    img = Image.new("RGBA", (20, 10), (200, 0, 0, 255))
    img.paste((0, 0, 200, 0), (0, 0, 10, 10))  # left half fully transparent
    img.paste((0, 0, 0, 128), (10, 0, 15, 10))  # half-transparent black
    for fmt in ("PNG", "WEBP"):
        out = decode_image(encode(img, fmt, lossless=True), LIMITS)
        assert out.mode == "RGB"
        assert out.getpixel((2, 2)) == (255, 255, 255)
        grey = out.getpixel((12, 2))
        assert isinstance(grey, tuple)
        assert all(120 <= c <= 135 for c in grey)
        assert out.getpixel((17, 2)) == (200, 0, 0)


def test_grey_with_alpha_is_composited_on_white() -> None:
    img = Image.new("LA", (8, 8), (40, 0))
    img.paste((40, 255), (4, 0, 8, 8))
    out = decode_image(encode(img, "PNG"), LIMITS)
    assert out.getpixel((1, 1)) == (255, 255, 255)
    assert out.getpixel((6, 1)) == (40, 40, 40)


def test_palette_transparency_is_composited_on_white() -> None:
    img = Image.new("P", (8, 8), 1)
    img.putpalette([0, 0, 0, 250, 10, 10] + [0] * 762)
    img.paste(0, (0, 0, 4, 8))
    for fmt in ("PNG", "GIF"):
        data = encode(img, fmt, transparency=0)
        assert "transparency" in Image.open(io.BytesIO(data)).info
        out = decode_image(data, LIMITS)
        assert out.getpixel((1, 1)) == (255, 255, 255)
        assert out.getpixel((6, 1)) == (250, 10, 10)


def test_cmyk_jpeg_becomes_rgb() -> None:
    cmyk = photo("flower").convert("CMYK")
    data = encode(cmyk, "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    out = decode_image(data, LIMITS)
    assert out.mode == "RGB"
    assert np.abs(pixels(out) - pixels(photo("flower"))).mean() < 8


def test_sixteen_bit_grey_is_scaled_not_clipped() -> None:
    ramp = np.tile(np.linspace(0, 65535, 256, dtype=np.uint16), (16, 1))
    data = encode(Image.fromarray(ramp), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    out = np.asarray(decode_image(data, LIMITS))
    assert out.shape == (16, 256, 3)
    row = out[0, :, 0].astype(int)
    # Pillow's own conversion clips everything above 255 to white; a scaled ramp stays a ramp.
    assert row[0] == 0
    assert row[-1] == 255
    assert abs(row[128] - 128) <= 1
    assert np.all(np.diff(row) >= 0)


def test_one_bit_and_grey_become_rgb() -> None:
    one = Image.new("1", (8, 8), 1)
    assert decode_image(encode(one, "PNG"), LIMITS).getpixel((0, 0)) == (255, 255, 255)
    grey = Image.new("L", (8, 8), 77)
    assert decode_image(encode(grey, "PNG"), LIMITS).getpixel((0, 0)) == (77, 77, 77)


# ---- refusals -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello, this is plain text and not a photo",
        b"<!doctype html><html><body>404</body></html>",
        b'{"error": "not found"}',
        random.Random(7).randbytes(4096),
        b"\x00" * 100,
    ],
    ids=["empty", "text", "html", "json", "random", "zeros"],
)
def test_non_images_are_refused(data: bytes) -> None:
    with pytest.raises(NotAnImage) as info:
        decode_image(data, LIMITS)
    assert info.value.code == "not_an_image"


@pytest.mark.parametrize("fmt", ["BMP", "TIFF", "ICO", "PPM", "PCX", "QOI"])
def test_real_images_of_other_formats_are_unsupported(fmt: str) -> None:
    data = encode(photo("chelsea").resize((64, 48)), fmt)
    assert reference(data).format == fmt  # it really is a readable image
    with pytest.raises(UnsupportedFormat) as info:
        decode_image(data, LIMITS)
    assert info.value.code == "unsupported_format"
    assert fmt in str(info.value)


def test_too_many_bytes_is_refused_before_looking_at_them() -> None:
    limits = ImageLimits(max_bytes=1000, max_pixels=LIMITS.max_pixels)
    # Not an image either: the byte limit must win, because it is checked before opening.
    with pytest.raises(ImageTooLarge) as info:
        decode_image(b"x" * 1001, limits)
    assert info.value.code == "image_too_large"
    assert "1001" in str(info.value)
    with pytest.raises(ImageTooLarge):
        decode_image(photo_bytes("rocket"), ImageLimits(1024, LIMITS.max_pixels))


def test_byte_limit_is_inclusive() -> None:
    data = encode(Image.new("RGB", (16, 16)), "PNG")
    img = decode_image(data, ImageLimits(max_bytes=len(data), max_pixels=256))
    assert img.size == (16, 16)


def test_bomb_header_is_refused_from_its_dimensions() -> None:
    data = png_with_size(100_000, 100_000)
    assert len(data) < 200
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(TooManyPixels) as info:
        decode_image(data, LIMITS)
    assert info.value.code == "too_many_pixels"
    assert before == Image.MAX_IMAGE_PIXELS


def test_pixel_limit_is_our_own_not_pillows() -> None:
    # 50 million pixels is under Pillow's global bomb threshold (~89M) but over our limit.
    data = png_with_size(10_000, 5_000)
    with pytest.raises(TooManyPixels) as info:
        decode_image(data, LIMITS)
    assert "10000x5000" in str(info.value)
    # The same header under a larger limit gets past the check and fails on its missing pixels.
    with pytest.raises(TruncatedImage):
        decode_image(data, ImageLimits(LIMITS.max_bytes, 60_000_000))


def test_pixel_limit_boundary() -> None:
    data = encode(Image.new("RGB", (100, 50), (1, 2, 3)), "PNG")
    assert decode_image(data, ImageLimits(LIMITS.max_bytes, 5000)).size == (100, 50)
    with pytest.raises(TooManyPixels):
        decode_image(data, ImageLimits(LIMITS.max_bytes, 4999))


def test_real_large_mostly_empty_png_is_refused_quickly() -> None:
    data = encode(Image.new("1", (9_000, 9_000)), "PNG")
    assert len(data) < 100_000
    start = time.perf_counter()
    with pytest.raises(TooManyPixels):
        decode_image(data, LIMITS)
    assert time.perf_counter() - start < 0.5


def test_pillow_bomb_warning_as_error_is_a_typed_refusal() -> None:
    # Over Pillow's warning threshold, under our (raised) limit: with warnings turned into errors
    # Pillow raises its warning, which must still come out as TooManyPixels.
    data = png_with_size(10_000, 9_500)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(TooManyPixels):
            decode_image(data, ImageLimits(LIMITS.max_bytes, 200_000_000))


def test_truncated_jpeg_is_an_error_not_a_grey_image() -> None:
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    data = photo_bytes("rocket")
    with pytest.raises(TruncatedImage) as info:
        decode_image(data[: len(data) // 2], LIMITS)
    assert info.value.code == "truncated_image"
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "GIF"])
def test_truncated_other_formats_are_errors(fmt: str) -> None:
    data = encode(photo("coffee"), fmt)
    with pytest.raises(TruncatedImage):
        decode_image(data[: len(data) // 2], LIMITS)


def test_corrupt_png_pixel_data_is_refused() -> None:
    data = bytearray(encode(photo("coffee"), "PNG"))
    idat = data.index(b"IDAT")
    for i in range(idat + 100, idat + 400):
        data[i] ^= 0x5A
    with pytest.raises(TruncatedImage):
        decode_image(bytes(data), LIMITS)


def test_corrupt_png_header_is_refused() -> None:
    data = bytearray(encode(photo("coffee"), "PNG"))
    data[20] ^= 0xFF  # inside IHDR: its CRC no longer matches
    with pytest.raises(TruncatedImage) as info:
        decode_image(bytes(data), LIMITS)
    assert "PNG" in str(info.value)


def test_error_codes_are_distinct_and_share_a_base() -> None:
    classes = [NotAnImage, UnsupportedFormat, ImageTooLarge, TooManyPixels, TruncatedImage]
    assert all(issubclass(c, ImageError) for c in classes)
    assert len({c.code for c in classes}) == len(classes)


# ---- draft mode ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("min_side", "expected"),
    [
        (None, (4000, 3000)),
        (224, (500, 375)),
        (375, (500, 375)),
        (376, (1000, 750)),
        (1000, (2000, 1500)),
        (1501, (4000, 3000)),
        (5000, (4000, 3000)),
    ],
)
def test_draft_reduces_jpeg_but_keeps_the_short_side(
    min_side: int | None, expected: tuple[int, int]
) -> None:
    img = decode_image(large_jpeg(), LIMITS, min_side=min_side)
    assert img.size == expected
    if min_side is not None:
        assert min(img.size) >= min(min_side, 3000)


def test_draft_respects_rotated_jpeg() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    big = photo("astronaut").resize((4000, 3000), Image.Resampling.BILINEAR)
    data = encode(big, "JPEG", exif=exif.tobytes(), quality=85)
    img = decode_image(data, LIMITS, min_side=300)
    assert img.size == (375, 500)


def test_multi_picture_jpeg_gives_its_first_picture_in_draft() -> None:
    # Phones and cameras write JPEGs with a second picture inside; Pillow calls them MPO.
    first = photo("astronaut").resize((2000, 1600), Image.Resampling.BILINEAR)
    second = Image.new("RGB", (2000, 1600), (0, 255, 0))
    data = encode(first, "MPO", save_all=True, append_images=[second], quality=90)
    assert reference(data).format == "MPO"
    img = decode_image(data, LIMITS, min_side=224)
    assert img.size == (500, 400)
    small = first.resize((500, 400), Image.Resampling.BOX)
    assert np.abs(pixels(img) - pixels(small)).mean() < 12


def test_draft_leaves_other_formats_at_full_size() -> None:
    data = encode(photo("chelsea"), "PNG")
    assert decode_image(data, LIMITS, min_side=32).size == photo("chelsea").size


def test_min_side_must_be_positive() -> None:
    with pytest.raises(ValueError, match="min_side"):
        decode_image(photo_bytes("rocket"), LIMITS, min_side=0)


def test_draft_decoding_is_faster() -> None:
    data = large_jpeg()

    def best_of(runs: int, fn: Callable[[], object]) -> float:
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)

    full = best_of(3, lambda: decode_image(data, LIMITS))
    reduced = best_of(3, lambda: decode_image(data, LIMITS, min_side=224))
    assert reduced < full * 0.6, (full, reduced)


# ---- concurrency, hashing, settings --------------------------------------------------------


def test_decoding_is_thread_safe() -> None:
    inputs: list[bytes] = []
    for name in ("chelsea", "coffee", "rocket", "china"):
        original = photo(name)
        inputs += [
            photo_bytes(name),
            encode(original, "WEBP", quality=80),
            encode(original, "GIF"),
            encode(original.convert("RGBA"), "PNG"),
        ]
    inputs += [b"not an image", photo_bytes("flower")[:5000], png_with_size(50_000, 50_000)]

    def outcome(data: bytes) -> str:
        try:
            img = decode_image(data, LIMITS, min_side=200)
        except ImageError as e:
            return e.code
        return f"{img.size}:{hashlib.sha256(img.tobytes()).hexdigest()}"

    expected = [outcome(d) for d in inputs]
    assert {"not_an_image", "truncated_image", "too_many_pixels"} <= set(expected)
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(3):
            assert list(pool.map(outcome, inputs * 2)) == expected * 2


def test_content_hash_is_sha256_of_the_bytes() -> None:
    data = photo_bytes("rocket")
    assert content_hash(data) == hashlib.sha256(data).hexdigest()
    assert len(content_hash(data)) == 64
    assert content_hash(data) != content_hash(data[:-1])


def test_limits_from_settings() -> None:
    limits = ImageLimits.from_settings(ImageSettings(max_image_bytes=4096, max_image_pixels=77))
    assert limits == ImageLimits(max_bytes=4096, max_pixels=77)


def test_extreme_aspect_ratio_is_refused_from_the_header() -> None:
    # Scaled to the model's 224 px shorter side, a 2 x 4000 strip would be 448k x 224 pixels.
    with pytest.raises(ExtremeAspectRatio):
        decode_image(png_with_size(2, 4000), LIMITS)
    banner = encode(Image.new("RGB", (40, 800), (10, 20, 30)), "PNG")
    ok = decode_image(banner, LIMITS)  # 20:1 is still a photo (a banner)
    assert ok.size == (40, 800)
