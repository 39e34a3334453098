"""The evaluation catalog: items with ground-truth attributes, sellers' listings, buyer photos."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from tqdm import tqdm

from models.evalset.realphotos import missing_photos
from models.evalset.render import BACKGROUND_SOURCES, PRINT_SOURCES, render_photo
from models.evalset.spec import (
    ATTRIBUTES,
    BUYER,
    VOCABULARY,
    PhotoKey,
    item_spec,
    parse_key,
    stable_rng,
)
from models.evalset.worker import render_in_processes

__all__ = [
    "ATTRIBUTES",
    "SPLITS",
    "VOCABULARY",
    "EvalCatalog",
    "EvalItem",
    "EvalListing",
    "build_eval_catalog",
    "render_photos",
]

SPLITS: tuple[str, ...] = ("train", "val", "test")
_CHUNK = 32  # photos per pool task: a few items, so each worker reuses an item's drawing


@dataclass(frozen=True)
class EvalListing:
    """One seller's listing of an item: its own product shots."""

    listing_id: str
    item_id: str
    photos: tuple[str, ...]


@dataclass(frozen=True)
class EvalItem:
    """A thing for sale, listed by several sellers, with held-out buyer photos of it."""

    item_id: str
    split: str
    category: str
    colour: str
    shape: str
    material: str
    title: str
    listings: tuple[EvalListing, ...]
    buyer_photos: tuple[str, ...]

    @property
    def labels(self) -> dict[str, int]:
        """attribute -> index into VOCABULARY[attribute]."""
        return {name: VOCABULARY[name].index(getattr(self, name)) for name in ATTRIBUTES}

    @property
    def photos(self) -> tuple[str, ...]:
        """Every photo key of the item: the listings' shots, then the buyer photos."""
        shots = tuple(key for listing in self.listings for key in listing.photos)
        return shots + self.buyer_photos


@dataclass(frozen=True)
class EvalCatalog:
    seed: int
    items: tuple[EvalItem, ...]

    def split(self, name: str) -> list[EvalItem]:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; use one of {', '.join(SPLITS)}")
        return [item for item in self.items if item.split == name]

    def listings(self, split: str | None = None) -> list[EvalListing]:
        items = self.items if split is None else self.split(split)
        return [listing for item in items for listing in item.listings]

    def photo_keys(self, split: str | None = None) -> list[str]:
        items = self.items if split is None else self.split(split)
        return [key for item in items for key in item.photos]

    def item_of(self, key: str) -> EvalItem:
        """The item a photo key or a listing id belongs to."""
        item = self._photo_items.get(key) or self._listing_items.get(key)
        if item is None:
            raise KeyError(f"no photo or listing {key!r} in this catalog")
        return item

    def has_photo(self, key: str) -> bool:
        return key in self._photo_items

    def photo_bytes(self, key: str) -> bytes:
        """The photo as JPEG: a pure function of (seed, key), the same in any process."""
        if key not in self._photo_items:
            raise KeyError(f"no photo {key!r} in this catalog")
        return render_photo(self.seed, key)

    @cached_property
    def _photo_items(self) -> dict[str, EvalItem]:
        return {key: item for item in self.items for key in item.photos}

    @cached_property
    def _listing_items(self) -> dict[str, EvalItem]:
        return {listing.listing_id: item for item in self.items for listing in item.listings}


def _letters(n: int) -> str:
    return "abcdefghijklmnopqrstuvwxyz"[:n]


def _splits(seed: int, categories: list[str], val_share: float, test_share: float) -> list[str]:
    """Split by item, stratified by category, with exact overall sizes: items are shuffled within
    each category, ranked by their relative position there, and cut in that order."""
    by_category: dict[str, list[int]] = {}
    for index, category in enumerate(categories):
        by_category.setdefault(category, []).append(index)
    ranked: list[tuple[float, str, int]] = []
    for category, members in sorted(by_category.items()):
        stable_rng(seed, "split", category).shuffle(members)
        ranked += [((r + 0.5) / len(members), category, i) for r, i in enumerate(members)]
    ranked.sort()
    n_test = round(len(categories) * test_share)
    n_val = round(len(categories) * val_share)
    splits = ["train"] * len(categories)
    for position, (_, _, index) in enumerate(ranked):
        if position < n_test:
            splits[index] = "test"
        elif position < n_test + n_val:
            splits[index] = "val"
    return splits


def build_eval_catalog(
    items: int = 360,
    seed: int = 11,
    *,
    listings_per_item: int = 2,
    photos_per_listing: int = 2,
    buyer_photos_per_item: int = 3,
    val_share: float = 0.1,
    test_share: float = 0.3,
) -> EvalCatalog:
    """The catalog's structure and ground truth (cheap: nothing is rendered). Item i's
    attributes and photos depend only on (seed, i), so a bigger catalog extends a smaller one."""
    if items < 1:
        raise ValueError("the evaluation catalog needs at least one item")
    if not 2 <= listings_per_item <= 26:
        raise ValueError("listings_per_item must be 2 to 26")
    if photos_per_listing < 1 or buyer_photos_per_item < 1:
        raise ValueError("every listing needs a photo and every item a buyer photo")
    if val_share < 0 or test_share < 0 or val_share + test_share >= 1:
        raise ValueError("val_share and test_share must be >= 0 and leave a training split")
    missing = missing_photos(PRINT_SOURCES + BACKGROUND_SOURCES)
    if missing:
        raise FileNotFoundError(
            f"photographs {', '.join(missing)} are not installed; the evaluation set needs the "
            "dev extras (scikit-image, scikit-learn)"
        )
    specs = [item_spec(seed, index) for index in range(items)]
    splits = _splits(seed, [spec.category for spec in specs], val_share, test_share)
    built: list[EvalItem] = []
    for spec, split in zip(specs, splits, strict=True):
        listings = tuple(
            EvalListing(
                listing_id=f"{spec.stem}-{letter}",
                item_id=spec.item_id,
                photos=tuple(
                    str(PhotoKey(spec.index, letter, k)) for k in range(photos_per_listing)
                ),
            )
            for letter in _letters(listings_per_item)
        )
        built.append(
            EvalItem(
                item_id=spec.item_id,
                split=split,
                category=spec.category,
                colour=spec.colour,
                shape=spec.shape,
                material=spec.material,
                title=spec.title,
                listings=listings,
                buyer_photos=tuple(
                    str(PhotoKey(spec.index, BUYER, k)) for k in range(buyer_photos_per_item)
                ),
            )
        )
    return EvalCatalog(seed=seed, items=tuple(built))


def _chunks(keys: list[str], size: int) -> list[list[str]]:
    """Keys grouped by item (an item's photos share one drawing of it), about `size` per chunk."""
    by_item: dict[int, list[str]] = {}
    for key in keys:
        by_item.setdefault(parse_key(key).index, []).append(key)
    chunks: list[list[str]] = [[]]
    for _, group in sorted(by_item.items()):
        if len(chunks[-1]) >= size:
            chunks.append([])
        chunks[-1].extend(group)
    return [chunk for chunk in chunks if chunk]


def render_photos(
    catalog: EvalCatalog,
    keys: Sequence[str],
    workers: int | None = None,
    progress: bool = False,
) -> dict[str, bytes]:
    """Render `keys` (returned in that order) in `workers` processes (default: one per CPU;
    0 or 1: in this process). Workers are fresh interpreters, so this is safe to call from any
    script (no main guard needed) and from a process that already runs torch or CUDA."""
    wanted = list(dict.fromkeys(keys))
    for key in wanted:
        if not catalog.has_photo(key):
            raise KeyError(f"no photo {key!r} in this catalog")
    n_workers = (os.cpu_count() or 1) if workers is None else workers
    chunks = _chunks(wanted, min(_CHUNK, max(1, len(wanted) // max(1, 4 * n_workers))))
    rendered: dict[str, bytes] = {}
    with tqdm(
        total=len(wanted), desc="rendering", unit="photo", disable=not progress, file=sys.stderr
    ) as bar:

        def done(chunk: list[str], photos: list[bytes]) -> None:
            rendered.update(zip(chunk, photos, strict=True))
            bar.update(len(chunk))

        if n_workers <= 1 or len(chunks) <= 1:
            for chunk in chunks:
                done(chunk, [render_photo(catalog.seed, key) for key in chunk])
        else:
            render_in_processes(catalog.seed, chunks, min(n_workers, len(chunks)), done)
    return {key: rendered[key] for key in wanted}
