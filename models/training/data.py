"""Training photos and labels, and the frozen trunk's outputs computed once and cached."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from models.evalset.catalog import ATTRIBUTES, EvalItem
from models.network import EmbeddingNet

# The identity of the item a photo shows: a classification task like the attributes, over the
# training items only (it teaches instance-level detail the attributes cannot name).
ITEM_TASK = "item"


@dataclass(frozen=True)
class TrainingPhotos:
    """Every photo training sees: each item's product shots and its buyer photos, with labels."""

    keys: list[str]
    labels: dict[str, torch.Tensor]  # task -> (n,) int64

    @property
    def tasks(self) -> dict[str, int]:
        return {name: int(t.max().item()) + 1 for name, t in self.labels.items()}


def training_photos(items: Sequence[EvalItem], vocabulary_sizes: dict[str, int]) -> TrainingPhotos:
    keys: list[str] = []
    rows: list[list[int]] = []
    for index, item in enumerate(items):
        photos = [key for listing in item.listings for key in listing.photos]
        photos += list(item.buyer_photos)
        labels = item.labels
        for key in photos:
            keys.append(key)
            rows.append([labels[name] for name in ATTRIBUTES] + [index])
    table = torch.tensor(rows, dtype=torch.int64)
    names = [*ATTRIBUTES, ITEM_TASK]
    out = TrainingPhotos(keys, {name: table[:, i] for i, name in enumerate(names)})
    # Heads are sized by the vocabulary, not by what this split happens to contain.
    for name, size in vocabulary_sizes.items():
        if int(out.labels[name].max()) >= size:
            raise ValueError(f"label of {name} outside its vocabulary of {size}")
    return out


class TrunkCache:
    """What the trainable part of the network takes as input, for every photo and its mirror.

    With a frozen trunk (start > 0) that is the trunk's output, computed once in float16: the
    costly high-resolution layers then run once per photo instead of once per photo per epoch.
    With start == 0 (everything trains) it is the uint8 image, scaled on the fly.
    """

    def __init__(
        self,
        net: EmbeddingNet,
        images: Sequence[Image.Image],
        start: int,
        device: torch.device,
        batch_size: int = 32,
        mirrors: bool = True,
        progress: bool = False,
        desc: str = "trunk",
    ) -> None:
        self.start = start
        self.device = device
        self._pre = net.preprocessing
        pixels = torch.from_numpy(np.stack([self._pre.prepare(im) for im in images]))
        pixels = pixels.permute(0, 3, 1, 2).contiguous()  # (n, 3, size, size) uint8
        self.size = len(images)
        self.mirrors = mirrors
        if start == 0:
            self._data = [pixels, pixels.flip(3)] if mirrors else [pixels]
            return
        self._data = []
        views = [False, True] if mirrors else [False]
        net.eval()
        with (
            tqdm(
                total=self.size * len(views),
                desc=desc,
                unit="photo",
                file=sys.stderr,
                disable=not progress,
            ) as bar,
            torch.inference_mode(),
        ):
            for mirrored in views:
                chunks = []
                for s in range(0, self.size, batch_size):
                    x = self._scaled(pixels[s : s + batch_size].to(device))
                    x = x.flip(3) if mirrored else x
                    chunks.append(net.backbone.trunk(x, start).to("cpu", torch.float16))
                    bar.update(x.shape[0])
                self._data.append(torch.cat(chunks))

    def _scaled(self, pixels: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self._pre.mean, device=pixels.device).view(1, 3, 1, 1)
        std = torch.tensor(self._pre.std, device=pixels.device).view(1, 3, 1, 1)
        return (pixels.float() - mean) / std

    def batch(self, indices: torch.Tensor, mirrored: torch.Tensor | None = None) -> torch.Tensor:
        """Inputs of the trainable part for `indices`, each taken mirrored where `mirrored` is."""
        x = self._data[0][indices]
        if mirrored is not None and self.mirrors:
            x = torch.where(mirrored.view(-1, 1, 1, 1), self._data[1][indices], x)
        x = x.to(self.device, non_blocking=True)
        return self._scaled(x) if self.start == 0 else x.float()
