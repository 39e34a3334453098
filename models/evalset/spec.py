"""What each evaluation item is: attribute vocabularies, stable per-item draws and photo keys."""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

ATTRIBUTES: tuple[str, ...] = ("category", "colour", "shape", "material")

DRAWN_CATEGORIES: tuple[str, ...] = (
    "mug",
    "t_shirt",
    "lamp",
    "vase",
    "cushion",
    "bottle",
    "bag",
    "clock",
    "hat",
    "chair",
)
PRINT = "print"
OBJECT_SHAPES: tuple[str, ...] = ("slim", "regular", "wide", "tapered")
PRINT_SHAPES: tuple[str, ...] = ("portrait", "landscape", "square", "round")
MATERIALS: tuple[str, ...] = ("matte", "glossy", "wood", "metal", "fabric", "stone")

# Spelled out (not derived from registries) so a label index never changes meaning.
VOCABULARY: dict[str, tuple[str, ...]] = {
    "category": (*DRAWN_CATEGORIES, PRINT),
    "colour": (
        "red",
        "orange",
        "yellow",
        "green",
        "teal",
        "blue",
        "purple",
        "pink",
        "brown",
        "black",
        "white",
        "grey",
    ),
    "shape": OBJECT_SHAPES + PRINT_SHAPES,
    "material": MATERIALS,
}

MATERIAL_WORDS: dict[str, str] = {
    "matte": "matte",
    "glossy": "glossy",
    "wood": "wooden",
    "metal": "metal",
    "fabric": "fabric",
    "stone": "stone",
}


def stable_seed(*parts: object) -> int:
    """A 64-bit seed from `parts`, the same in every process (unlike hash(), which is salted)."""
    text = "|".join(str(part) for part in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def stable_rng(*parts: object) -> random.Random:
    return random.Random(stable_seed(*parts))


def _stratified(seed: int, attribute: str, index: int, n: int) -> int:
    # Every run of n consecutive items takes each of the n values once, in an order drawn per run
    # and per attribute: balanced classes, every value present, attributes independent.
    block, position = divmod(index, n)
    order = list(range(n))
    stable_rng(seed, "strata", attribute, block).shuffle(order)
    return order[position]


@dataclass(frozen=True)
class ItemSpec:
    """An item's attributes, a pure function of (seed, index)."""

    index: int
    category: str
    colour: str
    shape: str
    material: str

    @property
    def item_id(self) -> str:
        return f"item-{self.index + 1:04d}"

    @property
    def stem(self) -> str:
        return f"eval-{self.index + 1:04d}"

    @property
    def title(self) -> str:
        noun = "framed print" if self.category == PRINT else self.category.replace("_", "-")
        words = (self.colour.capitalize(), MATERIAL_WORDS[self.material], self.shape, noun)
        return " ".join(words)


def item_spec(seed: int, index: int) -> ItemSpec:
    categories = VOCABULARY["category"]
    category = categories[_stratified(seed, "category", index, len(categories))]
    shapes = PRINT_SHAPES if category == PRINT else OBJECT_SHAPES
    colours = VOCABULARY["colour"]
    return ItemSpec(
        index=index,
        category=category,
        colour=colours[_stratified(seed, "colour", index, len(colours))],
        shape=shapes[_stratified(seed, "shape", index, len(shapes))],
        material=MATERIALS[_stratified(seed, "material", index, len(MATERIALS))],
    )


BUYER = "buyer"
_KEY = re.compile(r"eval-(\d{4,})-([a-z]|buyer)-(\d+)\.jpg")


@dataclass(frozen=True)
class PhotoKey:
    """A parsed photo key: a seller's shot (`listing` is its letter) or a buyer photo."""

    index: int
    listing: str  # a letter, or BUYER
    number: int

    @property
    def is_buyer(self) -> bool:
        return self.listing == BUYER

    def __str__(self) -> str:
        return f"eval-{self.index + 1:04d}-{self.listing}-{self.number}.jpg"


def parse_key(key: str) -> PhotoKey:
    match = _KEY.fullmatch(key)
    if match is None or int(match.group(1)) < 1:
        raise KeyError(key)
    parsed = PhotoKey(int(match.group(1)) - 1, match.group(2), int(match.group(3)))
    if str(parsed) != key:  # one spelling per photo: no leading zeros beyond the padding
        raise KeyError(key)
    return parsed
