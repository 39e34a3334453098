"""A manifest read, checked, split and its photos made local: the dataset train and eval use."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from pydantic import BaseModel, ConfigDict

from models.dataset.manifest import BadLine, ManifestLine, read_manifest
from models.dataset.photos import PhotoRequest, resolve_photos
from models.dataset.split import SplitShares, assign_splits, group_of
from models.images import ImageLimits
from models.network import Preprocessing
from models.settings import FetchSettings, ImageSettings


def _log() -> Any:
    # Looked up at each use, not cached at import: a logger bound once keeps the stderr of that
    # moment, and the command line reconfigures logging at every start.
    return structlog.get_logger("lookalike.dataset")


# Task names the dataset itself defines; an attribute may not take one of them.
CATEGORY_TASK = "category"
TOP_LEVEL_TASK = "top_level"
ITEM_TASK = "item"
RESERVED_TASKS = frozenset({CATEGORY_TASK, TOP_LEVEL_TASK, ITEM_TASK})
# What an unlabelled category shows as in per-category tables.
NO_CATEGORY = "(none)"


class DatasetOptions(BaseModel):
    """Which manifest, where fetched photos are kept, how lines are split."""

    model_config = ConfigDict(frozen=True)

    manifest: Path
    # Default: a `cache` folder beside the manifest.
    cache: Path | None = None
    split: str = "0.7,0.1,0.2"
    split_seed: int = 0
    skip_invalid: bool = False

    @property
    def cache_dir(self) -> Path:
        return self.cache if self.cache is not None else self.manifest.parent / "cache"


class InvalidDatasetError(ValueError):
    """The manifest has bad lines (or photos) and --skip-invalid was not given."""

    def __init__(self, path: Path, bad: list[BadLine]) -> None:
        self.path = path
        self.bad = sorted(bad, key=lambda b: b.lineno)
        super().__init__(f"{len(self.bad)} bad lines in {path}")


@dataclass(frozen=True)
class DataListing:
    """One usable listing: its photos as local files, its labels, its split."""

    lineno: int
    listing_id: str
    # The identity unit: "g:<group>", else "l:<listing_id>".
    group: str
    split: str
    photos: tuple[str, ...]
    buyer_photos: tuple[str, ...]
    # Task -> value: category, top_level and each attribute the line has.
    labels: Mapping[str, str]

    @property
    def top_level(self) -> str:
        return self.labels.get(TOP_LEVEL_TASK, NO_CATEGORY)


@dataclass
class Dataset:
    manifest: Path
    listings: list[DataListing]
    # Attribute names in the dataset (each one a task), sorted.
    attributes: list[str]
    skipped: list[BadLine] = field(default_factory=list)
    fetched: int = 0
    # How lines without a pinned split were split (--split, --split-seed).
    split_shares: str = ""
    split_seed: int = 0

    def split(self, name: str) -> list[DataListing]:
        return [x for x in self.listings if x.split == name]

    @property
    def tasks(self) -> list[str]:
        """Label tasks with at least one value: category, top level, then attributes."""
        present = {name for x in self.listings for name in x.labels}
        return [t for t in (CATEGORY_TASK, TOP_LEVEL_TASK, *self.attributes) if t in present]

    def photo_count(self, split: str | None = None) -> int:
        rows = self.listings if split is None else self.split(split)
        return sum(len(x.photos) + len(x.buyer_photos) for x in rows)


def _labels(line: ManifestLine) -> dict[str, str]:
    labels = dict(line.attributes)
    if line.category is not None:
        labels[CATEGORY_TASK] = line.category.strip("/")
        labels[TOP_LEVEL_TASK] = line.top_level or NO_CATEGORY
    return labels


def _reserved(lines: list[tuple[int, ManifestLine]]) -> list[BadLine]:
    return [
        BadLine(lineno, f"attributes.{name}: the name is reserved for a task of its own")
        for lineno, line in lines
        for name in line.attributes
        if name in RESERVED_TASKS
    ]


def load_dataset(
    options: DatasetOptions,
    fetch: FetchSettings,
    images: ImageSettings,
    preprocessing: Preprocessing,
    progress: bool = False,
) -> Dataset:
    """Read, validate, split and resolve the manifest (blocking).

    Raises InvalidDatasetError listing every bad line, missing file and undecodable photo with its
    line number, unless options.skip_invalid: then a bad photo is left out of its listing, a
    listing left without a seller photo (or a bad line) is skipped, and `skipped` lists them.
    OSError when the manifest cannot be read; ValueError for a bad --split.
    """
    shares = SplitShares.parse(options.split)
    manifest = read_manifest(options.manifest)
    bad = list(manifest.bad) + _reserved(manifest.lines)
    splits, contradictions = assign_splits(manifest.lines, shares, options.split_seed)
    bad += contradictions
    dropped = {b.lineno for b in bad}
    lines = [(n, line) for n, line in manifest.lines if n not in dropped]
    requests = [
        PhotoRequest(n, ref) for n, line in lines for ref in (*line.photos, *line.buyer_photos)
    ]
    resolved = resolve_photos(
        requests,
        manifest.root,
        options.cache_dir,
        fetch,
        ImageLimits.from_settings(images),
        preprocessing,
        progress=progress,
    )
    bad += [BadLine(p.lineno, f"photo {p.ref}: {p.reason}") for p in resolved.problems]
    if bad and not options.skip_invalid:
        raise InvalidDatasetError(options.manifest, bad)
    listings: list[DataListing] = []
    for n, line in lines:
        photos = tuple(str(resolved.files[(n, r)]) for r in line.photos if (n, r) in resolved.files)
        if not photos:
            if not any(b.lineno == n for b in bad):
                bad.append(BadLine(n, "no usable photo"))
            continue
        buyer = tuple(
            str(resolved.files[(n, r)]) for r in line.buyer_photos if (n, r) in resolved.files
        )
        listings.append(
            DataListing(
                n,
                line.listing_id,
                group_of(line),
                splits[line.listing_id],
                photos,
                buyer,
                _labels(line),
            )
        )
    attributes = sorted({name for x in lines for name in x[1].attributes} - RESERVED_TASKS)
    dataset = Dataset(
        options.manifest,
        listings,
        attributes,
        sorted(bad, key=lambda b: b.lineno),
        resolved.fetched,
        options.split,
        options.split_seed,
    )
    _log().info(
        "dataset_loaded",
        manifest=str(options.manifest),
        listings=len(listings),
        photos=dataset.photo_count(),
        skipped_lines=len({b.lineno for b in bad}),
        fetched=resolved.fetched,
        cached=resolved.cached,
        **{f"{s}_listings": len(dataset.split(s)) for s in ("train", "val", "test")},
    )
    return dataset
