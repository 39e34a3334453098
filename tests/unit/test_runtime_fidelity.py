"""Fidelity of the served runtime: OpenVINO's embeddings of real photos against eager fp32 torch."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Literal

import numpy as np
import pytest
from PIL import Image

from models.embedder import Embedder
from models.network import load_model
from models.settings import ModelSettings
from tests.photos import PHOTO_FILES, photo, rephotographed

pytestmark = pytest.mark.slow

# Per-photo cosine to eager fp32 torch that each precision must reach.
MIN_COSINE = {"fp32": 0.9999, "bf16": 0.99}
K = 5


@pytest.fixture(scope="module")
def photos() -> list[Image.Image]:
    """27 real photos: the 9 bundled ones, each also re-taken twice (rotated, cropped, JPEG)."""
    out = []
    for name in PHOTO_FILES:
        out.append(photo(name))
        for angle, crop in ((4.0, 0.08), (-7.0, 0.2)):
            data = rephotographed(name, angle=angle, crop=crop)
            out.append(Image.open(io.BytesIO(data)).convert("RGB"))
    return out


@pytest.fixture(scope="module")
def reference(photos: list[Image.Image]) -> np.ndarray:
    return Embedder(load_model(), "cpu", max_batch=8).embed(photos)


def _top_k(vectors: np.ndarray) -> list[set[int]]:
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    return [set(row) for row in np.argsort(-sims, axis=1)[:, :K].tolist()]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_openvino_embeds_real_photos_like_eager_fp32_torch(
    precision: Literal["fp32", "bf16"],
    photos: list[Image.Image],
    reference: np.ndarray,
    record_property: Callable[[str, object], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The default cache directory, as the services use it: a rerun compiles, never re-exports.
    served = Embedder.from_settings(
        ModelSettings(device="cpu", runtime="openvino", precision=precision)
    )
    assert served.runtime == "openvino" and served.inference_precision == precision
    got = served.embed(photos)
    cosines = np.sum(got * reference, axis=1)
    ours, theirs = _top_k(got), _top_k(reference)
    agreement = float(np.mean([len(a & b) / K for a, b in zip(ours, theirs, strict=True)]))
    record_property(f"{precision}_min_cosine", round(float(cosines.min()), 6))
    record_property(f"{precision}_top{K}_agreement", round(agreement, 4))
    with capsys.disabled():
        print(
            f"\nopenvino {precision} vs eager fp32 torch, {len(photos)} photos: cosine min "
            f"{cosines.min():.6f} mean {cosines.mean():.6f}; "
            f"top-{K} neighbours agree {agreement:.1%}"
        )
    assert cosines.min() >= MIN_COSINE[precision], cosines
    # Exact arithmetic keeps every neighbour; bf16 may swap near-ties at the edge of the top 5.
    assert agreement >= (1.0 if precision == "fp32" else 0.9)
