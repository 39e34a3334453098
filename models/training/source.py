"""What a training run learns from: labelled photos streamed in chunks, and a validation split
scored by retrieval. One implementation per kind of data: the built-in catalog and a manifest."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import torch
from PIL import Image

from models.dataset.dataset import ITEM_TASK, DataListing, Dataset
from models.evalset.catalog import ATTRIBUTES, VOCABULARY, EvalCatalog
from models.evaluation.harness import Vectors, rank_in_memory, report, split_photo_keys
from models.evaluation.listings import build_report
from models.evaluation.listings import rank_in_memory as rank_listings
from models.evaluation.photos import DEFAULT_LIMITS, load_photos
from models.images import ImageLimits
from models.network import Preprocessing
from models.training.data import MISSING, training_photos

Metadata = dict[str, str | int | float | bool]
# Photos decoded per chunk: what streaming holds at once.
CHUNK = 64


class TrainingSource(Protocol):
    """Training photos with a label per task (MISSING where a photo has none), head sizes, the
    validation photos, and how to score their embeddings."""

    @property
    def train_keys(self) -> Sequence[str]: ...

    @property
    def labels(self) -> dict[str, torch.Tensor]: ...

    @property
    def tasks(self) -> dict[str, int]: ...

    @property
    def val_keys(self) -> Sequence[str]: ...

    def images(
        self, keys: Sequence[str], preprocessing: Preprocessing, workers: int | None
    ) -> Iterator[list[Image.Image]]:
        """The photos of `keys` decoded the production way, in order, a chunk at a time."""
        ...

    def validate(self, model_id: str, vectors: Vectors) -> dict[str, Any]:
        """Retrieval on the validation split, as JSON with buyer_to_listing/listing_to_listing."""
        ...

    def metadata(self) -> Metadata: ...


class CatalogSource:
    """The built-in evaluation catalog (photos rendered, then handed out in chunks)."""

    def __init__(self, catalog: EvalCatalog, progress: bool = False) -> None:
        self.catalog = catalog
        self.progress = progress
        self.train_items = catalog.split("train")
        self.val_items = catalog.split("val")
        sizes = {name: len(VOCABULARY[name]) for name in ATTRIBUTES}
        photos = training_photos(self.train_items, sizes)
        self.train_keys: list[str] = photos.keys
        self.labels = photos.labels
        self.tasks = {**sizes, ITEM_TASK: len(self.train_items)}
        self.val_keys = split_photo_keys(self.val_items)

    def images(
        self, keys: Sequence[str], preprocessing: Preprocessing, workers: int | None
    ) -> Iterator[list[Image.Image]]:
        loaded = load_photos(
            self.catalog, keys, preprocessing, workers=workers, progress=self.progress
        )
        for s in range(0, len(loaded), CHUNK):
            yield loaded[s : s + CHUNK]

    def validate(self, model_id: str, vectors: Vectors) -> dict[str, Any]:
        rankings = rank_in_memory(self.val_items, vectors)
        return report(model_id, "val", self.val_items, rankings).as_json()

    def metadata(self) -> Metadata:
        return {"catalog_items": len(self.catalog.items), "catalog_seed": self.catalog.seed}


def read_photo(path: str, preprocessing: Preprocessing, limits: ImageLimits) -> Image.Image:
    """A photo file through the same decode-and-fit the worker and the API use."""
    return preprocessing.load(Path(path).read_bytes(), limits)


def stream_files(
    keys: Sequence[str],
    preprocessing: Preprocessing,
    limits: ImageLimits,
    workers: int | None = None,
    chunk: int = CHUNK,
) -> Iterator[list[Image.Image]]:
    """Photo files decoded on a thread pool, one chunk at a time, in order."""
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 2) as pool:
        for s in range(0, len(keys), chunk):
            yield list(
                pool.map(lambda k: read_photo(k, preprocessing, limits), keys[s : s + chunk])
            )


class DatasetSource:
    """A manifest's dataset: every train listing's photos and buyer photos, labelled with the
    listing's category, top level and attributes, and its group's identity."""

    def __init__(self, dataset: Dataset, limits: ImageLimits = DEFAULT_LIMITS) -> None:
        self.dataset = dataset
        self.limits = limits
        train = dataset.split("train")
        self.val_listings: list[DataListing] = dataset.split("val")
        if not train:
            raise ValueError(f"{dataset.manifest}: the train split has no listing")
        if not self.val_listings:
            raise ValueError(
                f"{dataset.manifest}: the val split has no listing (pin some lines to "
                '"split": "val" or give --split a val share)'
            )
        task_names = [*dataset.tasks, ITEM_TASK]
        vocab = {t: sorted({x.labels[t] for x in train if t in x.labels}) for t in dataset.tasks}
        vocab[ITEM_TASK] = sorted({x.group for x in train})
        self.vocabulary = vocab
        index = {t: {v: i for i, v in enumerate(values)} for t, values in vocab.items()}
        keys: list[str] = []
        rows: list[list[int]] = []
        for x in train:
            labels = {**x.labels, ITEM_TASK: x.group}
            row = [index[t].get(labels[t], MISSING) if t in labels else MISSING for t in task_names]
            for key in (*x.photos, *x.buyer_photos):
                keys.append(key)
                rows.append(row)
        table = torch.tensor(rows, dtype=torch.int64)
        self.train_keys = keys
        self.labels = {t: table[:, i] for i, t in enumerate(task_names)}
        # A task with a single class teaches nothing; leave it out.
        self.tasks = {t: len(vocab[t]) for t in task_names if len(vocab[t]) > 1}
        self.val_keys = [k for x in self.val_listings for k in (*x.photos, *x.buyer_photos)]

    def images(
        self, keys: Sequence[str], preprocessing: Preprocessing, workers: int | None
    ) -> Iterator[list[Image.Image]]:
        return stream_files(keys, preprocessing, self.limits, workers)

    def validate(self, model_id: str, vectors: Vectors) -> dict[str, Any]:
        results = rank_listings(self.val_listings, vectors)
        tasks = self.dataset.tasks
        return build_report(model_id, "val", self.val_listings, results, tasks).as_json()

    def metadata(self) -> Metadata:
        d = self.dataset
        return {
            "data": str(d.manifest),
            "train_listings": len(d.split("train")),
            "val_listings": len(self.val_listings),
            "train_photos": len(self.train_keys),
            "tasks": ",".join(sorted(self.tasks)),
            # eval --data with this checkpoint splits the manifest the same way by default.
            "split": d.split_shares,
            "split_seed": d.split_seed,
        }
