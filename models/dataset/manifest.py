"""The dataset manifest: one listing per JSON line, validated with each error's line number."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

SPLITS: tuple[str, ...] = ("train", "val", "test")
MAX_PHOTOS = 10

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=512)]
# A photo: a path relative to the manifest's folder (or absolute), or an http(s) URL.
PhotoRef = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=4096)]


class ManifestLine(BaseModel):
    """One listing of the dataset."""

    # Unknown fields are refused: a misspelt `buyer_photo` would otherwise drop data silently.
    model_config = ConfigDict(extra="forbid", frozen=True)

    listing_id: Text = Field(description="The listing's id, unique in the manifest.")
    photos: list[PhotoRef] = Field(
        min_length=1,
        max_length=MAX_PHOTOS,
        description="The seller's photos: paths relative to the manifest's folder, or URLs.",
    )
    group: Text | None = Field(
        default=None,
        description="Listings of the same product (relisted, or sold by several shops) share it.",
    )
    category: Text | None = Field(
        default=None,
        description="A path such as home_and_living/kitchen/mugs: the full path is one task, "
        "its top level another.",
    )
    attributes: dict[Text, Text] = Field(
        default_factory=dict,
        description="Attribute name -> value; each name in the dataset is a classification task.",
    )
    buyer_photos: list[PhotoRef] = Field(
        default_factory=list, description="Shoppers' photos of this listing's item."
    )
    split: Literal["train", "val", "test"] | None = Field(
        default=None, description="Pins the listing to a split; else it is split by group."
    )

    @property
    def top_level(self) -> str | None:
        return None if self.category is None else self.category.strip("/").split("/")[0]


@dataclass(frozen=True)
class BadLine:
    lineno: int
    reason: str


@dataclass
class Manifest:
    path: Path
    lines: list[tuple[int, ManifestLine]] = field(default_factory=list)
    bad: list[BadLine] = field(default_factory=list)

    @property
    def root(self) -> Path:
        """The folder relative photo paths start from."""
        return self.path.parent


def _reason(error: ValidationError) -> str:
    parts = []
    for e in error.errors(include_url=False):
        where = ".".join(str(x) for x in e["loc"])
        parts.append(f"{where}: {e['msg']}" if where else e["msg"])
    return "; ".join(parts)


def parse_line(text: str) -> ManifestLine:
    """One line as a listing; ValueError with the reason otherwise."""
    try:
        value: Any = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON: {e.msg} at column {e.colno}") from None
    if not isinstance(value, dict):
        raise ValueError(f"not a JSON object but {type(value).__name__}")
    try:
        return ManifestLine.model_validate(value)
    except ValidationError as e:
        raise ValueError(_reason(e)) from None


def read_manifest(path: Path) -> Manifest:
    """Every line of the file, parsed; bad lines (and repeated listing ids) are listed with their
    numbers, blank lines are skipped. OSError when the file cannot be read."""
    manifest = Manifest(path=path)
    first_seen: dict[str, int] = {}
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                line = parse_line(raw.decode("utf-8"))
            except UnicodeDecodeError:
                manifest.bad.append(BadLine(lineno, "not UTF-8"))
                continue
            except ValueError as e:
                manifest.bad.append(BadLine(lineno, str(e)))
                continue
            earlier = first_seen.setdefault(line.listing_id, lineno)
            if earlier != lineno:
                manifest.bad.append(
                    BadLine(lineno, f"listing_id {line.listing_id!r} repeats line {earlier}")
                )
                continue
            manifest.lines.append((lineno, line))
    return manifest


def format_bad(path: Path, bad: list[BadLine], limit: int = 50) -> str:
    """`FILE:LINE: reason`, one per bad line, the first `limit` of them."""
    lines = [f"{path}:{b.lineno}: {b.reason}" for b in sorted(bad, key=lambda b: b.lineno)]
    if len(lines) > limit:
        lines = [*lines[:limit], f"... and {len(lines) - limit} more"]
    return "\n".join(lines)
