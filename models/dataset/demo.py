"""The built-in evaluation catalog written as a dataset: photos as files, one manifest line per
listing, each item a group, its split pinned so the catalog's split is kept exactly."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from models.evalset.catalog import EvalCatalog, render_photos
from models.evalset.spec import PRINT

MANIFEST_NAME = "manifest.jsonl"


def category_path(category: str) -> str:
    """Drawn objects and framed prints are two top-level categories: a common and a rare one."""
    return "art/print" if category == PRINT else f"objects/{category}"


def _file(key: str) -> str:
    return f"photos/{key}"


def write_demo_dataset(
    catalog: EvalCatalog,
    out: Path,
    workers: int | None = None,
    progress: bool = False,
    url_of: Callable[[str], str | None] | None = None,
) -> Path:
    """Render every photo of `catalog` into `out/photos/` and write `out/manifest.jsonl`; returns
    the manifest's path. An item's buyer photos go to its listings in turn. With `url_of`, a
    photo's manifest entry is `url_of(relative path)` instead of the path (when it returns one)."""
    (out / "photos").mkdir(parents=True, exist_ok=True)
    rendered = render_photos(catalog, catalog.photo_keys(), workers=workers, progress=progress)
    for key, data in rendered.items():
        (out / _file(key)).write_bytes(data)

    def ref(key: str) -> str:
        path = _file(key)
        url = url_of(path) if url_of is not None else None
        return url if url is not None else path

    lines = []
    for item in catalog.items:
        n = len(item.listings)
        for i, listing in enumerate(item.listings):
            line = {
                "listing_id": listing.listing_id,
                "group": item.item_id,
                "category": category_path(item.category),
                "attributes": {
                    "colour": item.colour,
                    "shape": item.shape,
                    "material": item.material,
                },
                "photos": [ref(k) for k in listing.photos],
                "buyer_photos": [ref(k) for j, k in enumerate(item.buyer_photos) if j % n == i],
                "split": item.split,
            }
            lines.append(json.dumps(line, sort_keys=True))
    manifest = out / MANIFEST_NAME
    manifest.write_text("\n".join(lines) + "\n")
    return manifest
