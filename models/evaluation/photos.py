"""An evaluation split's photos rendered, decoded the production way, and embedded in batches."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import numpy.typing as npt
from PIL import Image
from tqdm import tqdm

from models.embedder import Embedder
from models.evalset.catalog import EvalCatalog, render_photos
from models.images import ImageLimits
from models.network import Preprocessing
from models.settings import ImageSettings

# The production defaults (LOOKALIKE_MAX_IMAGE_*): renders pass the same checks an upload does.
DEFAULT_LIMITS = ImageLimits(
    max_bytes=ImageSettings.model_fields["max_image_bytes"].default,
    max_pixels=ImageSettings.model_fields["max_image_pixels"].default,
)


def load_photos(
    catalog: EvalCatalog,
    keys: Sequence[str],
    preprocessing: Preprocessing,
    workers: int | None = None,
    progress: bool = False,
    limits: ImageLimits | None = None,
) -> list[Image.Image]:
    """The photos as the model sees them: rendered (JPEG bytes), then decoded and fitted by the
    same `Preprocessing.load` the worker and the API use, in `keys` order."""
    rendered = render_photos(catalog, keys, workers=workers, progress=progress)
    limits = limits or DEFAULT_LIMITS
    with ThreadPoolExecutor(max_workers=workers or 2) as pool:
        return list(pool.map(lambda key: preprocessing.load(rendered[key], limits), keys))


def embed_images(
    embedder: Embedder, images: Sequence[Image.Image], progress: bool = False, desc: str = "embed"
) -> npt.NDArray[np.float32]:
    """(n, dim) embeddings, batch by batch behind a progress bar."""
    out = np.empty((len(images), embedder.dim), dtype=np.float32)
    step = embedder.max_batch
    with tqdm(
        total=len(images), desc=desc, unit="photo", file=sys.stderr, disable=not progress
    ) as bar:
        for start in range(0, len(images), step):
            chunk = images[start : start + step]
            out[start : start + len(chunk)] = embedder.embed(chunk)
            bar.update(len(chunk))
    return out
