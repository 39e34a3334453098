"""Real photographs that ship inside installed wheels (scikit-image, scikit-learn)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from functools import cache
from itertools import cycle, islice
from pathlib import Path

import skimage.data
import sklearn.datasets
from PIL import Image

_SKIMAGE_DIR = Path(skimage.data.__file__).parent
_SKLEARN_DIR = Path(sklearn.datasets.__file__).parent / "images"

# Colour photographs of distinct real things (greyscale/scientific images left out on purpose).
PHOTO_FILES: dict[str, Path] = {
    "chelsea": _SKIMAGE_DIR / "chelsea.png",  # a cat
    "coffee": _SKIMAGE_DIR / "coffee.png",
    "astronaut": _SKIMAGE_DIR / "astronaut.png",
    "rocket": _SKIMAGE_DIR / "rocket.jpg",
    "motorcycle": _SKIMAGE_DIR / "motorcycle_left.png",
    "retina": _SKIMAGE_DIR / "retina.jpg",
    "hubble": _SKIMAGE_DIR / "hubble_deep_field.jpg",
    "china": _SKLEARN_DIR / "china.jpg",
    "flower": _SKLEARN_DIR / "flower.jpg",
}


@cache
def photo_bytes(name: str) -> bytes:
    """The original file bytes of a bundled photo."""
    return PHOTO_FILES[name].read_bytes()


def photo(name: str) -> Image.Image:
    """A bundled photo decoded to RGB."""
    return Image.open(io.BytesIO(photo_bytes(name))).convert("RGB")


def jpeg_bytes(image: Image.Image, quality: int = 85) -> bytes:
    """Encode an image as JPEG."""
    out = io.BytesIO()
    image.convert("RGB").save(out, format="JPEG", quality=quality)
    return out.getvalue()


def rephotographed(name: str, angle: float = 4.0, crop: float = 0.08, quality: int = 60) -> bytes:
    """A bundled photo as a shopper would send it again: resized, rotated a little, mildly cropped
    and re-encoded as a low-quality JPEG."""
    img = photo(name)
    w, h = img.size
    img = img.rotate(angle, resample=Image.Resampling.BILINEAR, expand=False)
    dx, dy = int(w * crop / 2), int(h * crop / 2)
    img = img.crop((dx, dy, w - dx, h - dy)).resize(
        (int(w * 0.7), int(h * 0.7)), Image.Resampling.BILINEAR
    )
    return jpeg_bytes(img, quality=quality)


def side_by_side(left: str, right: str) -> bytes:
    """Two catalog photos in one shot, each on its own half."""
    canvas = Image.new("RGB", (640, 320), (255, 255, 255))
    for i, name in enumerate((left, right)):
        canvas.paste(photo(name).convert("RGB").resize((320, 320)), (320 * i, 0))
    return jpeg_bytes(canvas)


def sized_jpegs(count: int, long_sides: Sequence[int], quality: int) -> list[bytes]:
    """`count` JPEGs of the bundled photos, cycling through the photos and the long-side sizes."""
    out = []
    for name, side in islice(zip(cycle(PHOTO_FILES), cycle(long_sides)), count):
        img = photo(name)
        scale = side / max(img.size)
        size = (round(img.width * scale), round(img.height * scale))
        out.append(jpeg_bytes(img.resize(size, Image.Resampling.BICUBIC), quality=quality))
    return out
