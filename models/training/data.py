"""Training photos and labels, and the frozen trunk's outputs computed once and cached."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from models.dataset.dataset import ITEM_TASK
from models.evalset.catalog import ATTRIBUTES, EvalItem
from models.network import EmbeddingNet

# ITEM_TASK: the identity of the item a photo shows, a classification task like the attributes,
# over the training items only (it teaches instance-level detail the attributes cannot name).
# A label of MISSING is left out of its task's loss.
MISSING = -1


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


class _Table(Protocol):
    def write(self, position: int, rows: torch.Tensor) -> None: ...

    def gather(self, indices: torch.Tensor) -> torch.Tensor: ...

    def close(self) -> None: ...


class _MemoryTable:
    def __init__(self, data: torch.Tensor) -> None:
        self.data = data

    def write(self, position: int, rows: torch.Tensor) -> None:
        self.data[position : position + rows.shape[0]] = rows

    def gather(self, indices: torch.Tensor) -> torch.Tensor:
        return self.data[indices]

    def close(self) -> None:
        self.data = torch.empty(0)


class _FileTable:
    """Rows of one shape in an unlinked temporary file, read with pread: unlike a memory map,
    the rows read stay in the page cache only, never in the process's resident memory."""

    def __init__(self, folder: Path, size: int, shape: torch.Size, dtype: torch.dtype) -> None:
        self.shape = tuple(shape)
        self.dtype = dtype
        self.row_bytes = int(np.prod(self.shape)) * torch.empty(0, dtype=dtype).element_size()
        # Unlinked at once: the file goes away with the process, however it ends.
        self.file = tempfile.TemporaryFile(dir=folder, prefix="trunk-")  # noqa: SIM115 - close()
        self.file.truncate(size * self.row_bytes)
        self.fd = self.file.fileno()

    def write(self, position: int, rows: torch.Tensor) -> None:
        data = rows.contiguous().view(torch.uint8).numpy().tobytes()
        os.pwrite(self.fd, data, position * self.row_bytes)

    def gather(self, indices: torch.Tensor) -> torch.Tensor:
        buf = bytearray(len(indices) * self.row_bytes)
        view = memoryview(buf)
        for i, index in enumerate(indices.tolist()):
            start = i * self.row_bytes
            got = os.preadv(self.fd, [view[start : start + self.row_bytes]], index * self.row_bytes)
            if got != self.row_bytes:
                raise OSError(f"short read of trunk row {index}")
        flat = torch.frombuffer(buf, dtype=torch.uint8)
        return flat.view(self.dtype).view(len(indices), *self.shape)

    def close(self) -> None:
        self.file.close()


class TrunkCache:
    """What the trainable part of the network takes as input, for every photo and its mirror.

    With a frozen trunk (start > 0) that is the trunk's output, computed once in float16: the
    costly high-resolution layers then run once per photo instead of once per photo per epoch.
    With start == 0 (everything trains) it is the uint8 image, scaled (and mirrored) on the fly.
    Photos arrive in chunks and are dropped once computed; with `spill` the table lives in an
    unlinked file there, read back a batch at a time, so a large dataset needs disk and page
    cache, not process memory.
    """

    def __init__(
        self,
        net: EmbeddingNet,
        chunks: Iterable[Sequence[Image.Image]],
        size: int,
        start: int,
        device: torch.device,
        batch_size: int = 32,
        mirrors: bool = True,
        progress: bool = False,
        desc: str = "trunk",
        spill: Path | None = None,
    ) -> None:
        self.start = start
        self.device = device
        self._pre = net.preprocessing
        self.size = size
        self.mirrors = mirrors
        self._spill = spill
        views = [False, True] if mirrors and start > 0 else [False]
        self._data: list[_Table] = []
        position = 0
        net.eval()
        with (
            tqdm(
                total=size,
                desc=desc,
                unit="photo",
                file=sys.stderr,
                disable=not progress,
            ) as bar,
            torch.inference_mode(),
        ):
            for chunk in chunks:
                pixels = torch.from_numpy(np.stack([self._pre.prepare(im) for im in chunk]))
                pixels = pixels.permute(0, 3, 1, 2).contiguous()  # (n, 3, size, size) uint8
                n = pixels.shape[0]
                if position + n > size:
                    raise ValueError(f"more than the {size} photos announced")
                outputs = [pixels] if start == 0 else []
                for mirrored in views if start > 0 else []:
                    parts = []
                    for s in range(0, n, batch_size):
                        x = self._scaled(pixels[s : s + batch_size].to(device))
                        x = x.flip(3) if mirrored else x
                        out = net.backbone.trunk(x, start).to("cpu", torch.float16)
                        parts.append(out.contiguous())
                    outputs.append(torch.cat(parts))
                if not self._data:
                    self._data = [self._table(o.shape[1:], o.dtype) for o in outputs]
                for table, out in zip(self._data, outputs, strict=True):
                    table.write(position, out)
                position += n
                # Photos, each through every view (plain and mirrored).
                bar.update(n)
        if position != size:
            raise ValueError(f"{position} photos arrived of the {size} announced")

    def _table(self, shape: torch.Size, dtype: torch.dtype) -> _Table:
        if self._spill is None:
            return _MemoryTable(torch.empty((self.size, *shape), dtype=dtype))
        return _FileTable(self._spill, self.size, shape, dtype)

    def close(self) -> None:
        for table in self._data:
            table.close()
        self._data = []

    def _scaled(self, pixels: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self._pre.mean, device=pixels.device).view(1, 3, 1, 1)
        std = torch.tensor(self._pre.std, device=pixels.device).view(1, 3, 1, 1)
        return _channels_last((pixels.float() - mean) / std)

    def batch(self, indices: torch.Tensor, mirrored: torch.Tensor | None = None) -> torch.Tensor:
        """Inputs of the trainable part for `indices`, each taken mirrored where `mirrored` is."""
        x = self._data[0].gather(indices)
        if mirrored is not None and self.mirrors:
            other = x.flip(3) if self.start == 0 else self._data[1].gather(indices)
            x = torch.where(mirrored.view(-1, 1, 1, 1), other, x)
        x = x.to(self.device, non_blocking=True)
        return _channels_last(self._scaled(x) if self.start == 0 else x.float())


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    # The depthwise and pointwise convolutions run ~1.5x faster on a CPU in channels-last
    # layout, forward and backward (measured at batch 32 on the 2-core development machine:
    # trunk 26 -> 38 photos/s, trainable blocks 65 -> 102 photos/s forward + backward).
    return x.contiguous(memory_format=torch.channels_last)
