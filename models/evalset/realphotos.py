"""Real photographs shipped inside installed wheels (scikit-image, scikit-learn), read by path."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib.util import find_spec
from pathlib import Path

from PIL import Image


@dataclass(frozen=True)
class RealPhoto:
    """A photograph shipped inside a wheel and the kind of listing it stands for."""

    package: str
    relative_path: str
    title: str
    category: str


# Read by path (never imported: scikit-image and scikit-learn are heavy and only dev extras).
REAL_PHOTOS: dict[str, RealPhoto] = {
    "chelsea": RealPhoto(
        "skimage", "data/chelsea.png", "Tabby cat portrait print", "art/prints/animals"
    ),
    "coffee": RealPhoto(
        "skimage", "data/coffee.png", "Espresso cup and saucer", "home_and_living/kitchen/cups"
    ),
    "astronaut": RealPhoto(
        "skimage", "data/astronaut.png", "Astronaut portrait poster", "art/prints/space"
    ),
    "rocket": RealPhoto("skimage", "data/rocket.jpg", "Rocket launch photo", "art/prints/space"),
    "motorcycle": RealPhoto(
        "skimage", "data/motorcycle_left.png", "Vintage motorcycle", "vehicles/motorcycles"
    ),
    "china": RealPhoto(
        "sklearn", "datasets/images/china.jpg", "Temple landscape print", "art/prints/travel"
    ),
    "flower": RealPhoto(
        "sklearn",
        "datasets/images/flower.jpg",
        "Pink flower close-up print",
        "art/prints/botanical",
    ),
}

# Every picture the evaluation set paints with: (package, path inside it). brick, grass and
# gravel are greyscale textures.
PHOTO_FILES: dict[str, tuple[str, str]] = {
    **{name: (photo.package, photo.relative_path) for name, photo in REAL_PHOTOS.items()},
    "color": ("skimage", "data/color.png"),
    "retina": ("skimage", "data/retina.jpg"),
    "hubble": ("skimage", "data/hubble_deep_field.jpg"),
    "brick": ("skimage", "data/brick.png"),
    "grass": ("skimage", "data/grass.png"),
    "gravel": ("skimage", "data/gravel.png"),
}


def _located(package: str, relative_path: str) -> Path | None:
    spec = find_spec(package)
    roots = spec.submodule_search_locations if spec is not None else None
    if not roots:
        return None
    path = Path(next(iter(roots))) / relative_path
    return path if path.is_file() else None


def real_photo_paths() -> dict[str, Path]:
    """The bundled photographs that exist in this environment (none if the wheels are absent)."""
    found: dict[str, Path] = {}
    for name, photo in REAL_PHOTOS.items():
        path = _located(photo.package, photo.relative_path)
        if path is not None:
            found[name] = path
    return found


def missing_photos(names: tuple[str, ...] | None = None) -> list[str]:
    """The names among `names` (default: all of PHOTO_FILES) whose files are not installed."""
    wanted = tuple(PHOTO_FILES) if names is None else names
    return [name for name in wanted if _located(*PHOTO_FILES[name]) is None]


@cache
def load_photo(name: str, max_side: int = 800) -> Image.Image:
    """One picture of PHOTO_FILES, decoded once per process (RGB, or L for the greyscale
    textures) and shrunk to at most `max_side`; callers must not modify it in place."""
    path = _located(*PHOTO_FILES[name])
    if path is None:
        package, relative_path = PHOTO_FILES[name]
        raise FileNotFoundError(
            f"{package}/{relative_path} is not installed; the evaluation set needs the dev extras "
            "(scikit-image, scikit-learn)"
        )
    with Image.open(path) as opened:
        image = opened.convert("L" if opened.mode in ("L", "I;16", "I") else "RGB")
    if max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return image
