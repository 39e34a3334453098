"""A deterministic demo catalog: real photographs from installed wheels plus drawn product shots."""

from __future__ import annotations

import io
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from importlib.util import find_spec
from pathlib import Path

from PIL import Image, ImageDraw, ImageEnhance, ImageOps

from models.events import ImageRef, ListingDeleted, ListingUpserted, Price

PHOTO_SIDE = 360


@dataclass(frozen=True)
class RealPhoto:
    """A photograph shipped inside a wheel and the kind of listing it stands for."""

    package: str
    relative_path: str
    title: str
    category: str


# Read by path (never imported: scikit-image and scikit-learn are heavy and only dev extras).
REAL_PHOTOS: dict[str, RealPhoto] = {
    "chelsea": RealPhoto(
        "skimage", "data/chelsea.png", "Tabby cat portrait print", "art/prints/animals"
    ),
    "coffee": RealPhoto(
        "skimage", "data/coffee.png", "Espresso cup and saucer", "home_and_living/kitchen/cups"
    ),
    "astronaut": RealPhoto(
        "skimage", "data/astronaut.png", "Astronaut portrait poster", "art/prints/space"
    ),
    "rocket": RealPhoto("skimage", "data/rocket.jpg", "Rocket launch photo", "art/prints/space"),
    "motorcycle": RealPhoto(
        "skimage", "data/motorcycle_left.png", "Vintage motorcycle", "vehicles/motorcycles"
    ),
    "china": RealPhoto(
        "sklearn", "datasets/images/china.jpg", "Temple landscape print", "art/prints/travel"
    ),
    "flower": RealPhoto(
        "sklearn",
        "datasets/images/flower.jpg",
        "Pink flower close-up print",
        "art/prints/botanical",
    ),
}


def real_photo_paths() -> dict[str, Path]:
    """The bundled photographs that exist in this environment (none if the wheels are absent)."""
    found: dict[str, Path] = {}
    for name, photo in REAL_PHOTOS.items():
        spec = find_spec(photo.package)
        roots = spec.submodule_search_locations if spec is not None else None
        if not roots:
            continue
        path = Path(next(iter(roots))) / photo.relative_path
        if path.is_file():
            found[name] = path
    return found


COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (200, 40, 40),
    "orange": (235, 130, 30),
    "yellow": (235, 200, 40),
    "green": (50, 150, 70),
    "teal": (30, 140, 140),
    "blue": (40, 80, 190),
    "purple": (120, 60, 160),
    "pink": (230, 120, 170),
    "brown": (120, 80, 45),
    "black": (30, 30, 30),
    "white": (245, 245, 240),
    "grey": (130, 130, 135),
}

Painter = Callable[[ImageDraw.ImageDraw, float, float, float, tuple[int, int, int]], None]


def _mug(d: ImageDraw.ImageDraw, cx: float, cy: float, s: float, c: tuple[int, int, int]) -> None:
    d.rectangle((cx - s * 0.5, cy - s * 0.55, cx + s * 0.35, cy + s * 0.55), fill=c)
    d.ellipse((cx - s * 0.5, cy - s * 0.65, cx + s * 0.35, cy - s * 0.45), fill=_darker(c))
    d.arc((cx + s * 0.15, cy - s * 0.3, cx + s * 0.7, cy + s * 0.3), -90, 90, fill=c, width=14)


def _shirt(d: ImageDraw.ImageDraw, cx: float, cy: float, s: float, c: tuple[int, int, int]) -> None:
    pts = [(-0.3, -0.6), (-0.8, -0.3), (-0.6, 0.0), (-0.4, -0.15), (-0.4, 0.7), (0.4, 0.7)]
    pts += [(0.4, -0.15), (0.6, 0.0), (0.8, -0.3), (0.3, -0.6), (0.0, -0.45)]
    d.polygon([(cx + x * s, cy + y * s) for x, y in pts], fill=c)


def _lamp(d: ImageDraw.ImageDraw, cx: float, cy: float, s: float, c: tuple[int, int, int]) -> None:
    d.polygon(
        [
            (cx - s * 0.2, cy - s * 0.7),
            (cx + s * 0.2, cy - s * 0.7),
            (cx + s * 0.45, cy - s * 0.15),
            (cx - s * 0.45, cy - s * 0.15),
        ],
        fill=c,
    )
    d.rectangle((cx - s * 0.04, cy - s * 0.15, cx + s * 0.04, cy + s * 0.55), fill=(60, 60, 60))
    d.ellipse((cx - s * 0.3, cy + s * 0.5, cx + s * 0.3, cy + s * 0.7), fill=(60, 60, 60))


def _vase(d: ImageDraw.ImageDraw, cx: float, cy: float, s: float, c: tuple[int, int, int]) -> None:
    d.ellipse((cx - s * 0.45, cy - s * 0.2, cx + s * 0.45, cy + s * 0.7), fill=c)
    d.rectangle((cx - s * 0.15, cy - s * 0.7, cx + s * 0.15, cy), fill=c)
    d.ellipse((cx - s * 0.22, cy - s * 0.78, cx + s * 0.22, cy - s * 0.62), fill=_darker(c))


def _cushion(
    d: ImageDraw.ImageDraw, cx: float, cy: float, s: float, c: tuple[int, int, int]
) -> None:
    box = (cx - s * 0.65, cy - s * 0.55, cx + s * 0.65, cy + s * 0.55)
    d.rounded_rectangle(box, radius=int(s * 0.2), fill=c)
    for i in range(1, 5):
        x = box[0] + (box[2] - box[0]) * i / 5
        d.line((x, box[1] + 8, x, box[3] - 8), fill=_darker(c), width=6)


def _bottle(
    d: ImageDraw.ImageDraw, cx: float, cy: float, s: float, c: tuple[int, int, int]
) -> None:
    d.rounded_rectangle(
        (cx - s * 0.28, cy - s * 0.35, cx + s * 0.28, cy + s * 0.75), radius=int(s * 0.1), fill=c
    )
    d.rectangle((cx - s * 0.1, cy - s * 0.7, cx + s * 0.1, cy - s * 0.3), fill=c)
    d.rectangle((cx - s * 0.12, cy - s * 0.8, cx + s * 0.12, cy - s * 0.68), fill=(40, 40, 40))


@dataclass(frozen=True)
class Product:
    """A kind of drawn product: how to paint it, what it is called and where it is listed."""

    noun: str
    category: str
    paint: Painter
    price_range: tuple[int, int]


PRODUCTS: list[Product] = [
    Product("ceramic mug", "home_and_living/kitchen/mugs", _mug, (12, 40)),
    Product("cotton t-shirt", "clothing/tops/t_shirts", _shirt, (15, 45)),
    Product("table lamp", "home_and_living/lighting/lamps", _lamp, (35, 180)),
    Product("flower vase", "home_and_living/decor/vases", _vase, (20, 90)),
    Product("striped cushion", "home_and_living/textiles/cushions", _cushion, (18, 60)),
    Product("water bottle", "home_and_living/kitchen/bottles", _bottle, (10, 35)),
]


def _darker(c: tuple[int, int, int]) -> tuple[int, int, int]:
    r, g, b = c
    return (int(r * 0.7), int(g * 0.7), int(b * 0.7))


def _jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, format="JPEG", quality=88)
    return out.getvalue()


def _drawn(product: Product, colour: tuple[int, int, int], rng: random.Random) -> bytes:
    """One shot of a drawn product: the same object, a different framing and backdrop per shot."""
    tone = rng.randint(205, 250)
    tr, tg, tb = rng.choice([(0, 0, 0), (10, 0, -10), (-10, 0, 10), (0, 8, 0)])
    background = (min(255, tone + tr), min(255, tone + tg), min(255, tone + tb))
    image = Image.new("RGB", (PHOTO_SIDE, PHOTO_SIDE), background)
    draw = ImageDraw.Draw(image)
    # A floor line, so the shot is not a flat icon.
    floor = int(PHOTO_SIDE * rng.uniform(0.75, 0.9))
    draw.rectangle((0, floor, PHOTO_SIDE, PHOTO_SIDE), fill=_darker(background))
    size = PHOTO_SIDE * rng.uniform(0.28, 0.38)
    cx = PHOTO_SIDE / 2 + rng.uniform(-30, 30)
    cy = PHOTO_SIDE / 2 + rng.uniform(-20, 20)
    product.paint(draw, cx, cy, size, colour)
    image = image.rotate(
        rng.uniform(-8, 8), resample=Image.Resampling.BICUBIC, fillcolor=background
    )
    return _jpeg(image)


def _reshot(source: Image.Image, rng: random.Random) -> bytes:
    """Another photo of the same real thing: a crop, a slight turn, a change of light."""
    w, h = source.size
    scale = rng.uniform(0.7, 0.95)
    cw, ch = int(w * scale), int(h * scale)
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    image = source.crop((x, y, x + cw, y + ch)).rotate(
        rng.uniform(-5, 5), resample=Image.Resampling.BILINEAR
    )
    if rng.random() < 0.3:
        image = ImageOps.mirror(image)
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.85, 1.15))
    image.thumbnail((PHOTO_SIDE * 4 // 3, PHOTO_SIDE * 4 // 3))
    return _jpeg(image)


@dataclass(frozen=True)
class DemoListing:
    """One listing of the demo catalog; `photos` are file names in the catalog's photo set."""

    listing_id: str
    title: str
    category: str
    price: Decimal
    currency: str
    shop_id: str
    photos: tuple[str, ...]


@dataclass(frozen=True)
class DemoEdit:
    """A change published after the catalog is indexed, so live updates can be watched."""

    kind: str  # "price", "photo" or "delete"
    listing: DemoListing  # the listing after the edit (as before it, for a deletion)


@dataclass(frozen=True)
class DemoCatalog:
    listings: list[DemoListing]
    edits: list[DemoEdit]
    # File name -> JPEG bytes: every photo the listings and the edits refer to.
    photos: dict[str, bytes] = field(repr=False)

    def write_photos(self, directory: Path) -> None:
        """Write every photo under `directory` (blocking)."""
        directory.mkdir(parents=True, exist_ok=True)
        for name, data in self.photos.items():
            path = directory / name
            if not path.exists() or path.read_bytes() != data:
                path.write_bytes(data)

    def upserts(self, base_url: str, version: int) -> list[ListingUpserted]:
        """The catalog as listing.upserted events whose photos are under `base_url`."""
        return [_upsert(listing, base_url, version) for listing in self.listings]

    def edit_events(self, base_url: str, version: int) -> list[ListingUpserted | ListingDeleted]:
        events: list[ListingUpserted | ListingDeleted] = []
        for edit in self.edits:
            if edit.kind == "delete":
                events.append(
                    ListingDeleted(
                        listing_id=edit.listing.listing_id,
                        version=version,
                        occurred_at=datetime.now(UTC),
                    )
                )
            else:
                events.append(_upsert(edit.listing, base_url, version))
        return events

    @property
    def edited_ids(self) -> set[str]:
        return {edit.listing.listing_id for edit in self.edits}


def _upsert(listing: DemoListing, base_url: str, version: int) -> ListingUpserted:
    base = base_url.rstrip("/")
    return ListingUpserted(
        listing_id=listing.listing_id,
        version=version,
        occurred_at=datetime.now(UTC),
        state="active",
        title=listing.title,
        category=listing.category,
        price=Price(amount=listing.price, currency=listing.currency),
        shop_id=listing.shop_id,
        images=[ImageRef(url=f"{base}/{name}") for name in listing.photos],
    )


def build_catalog(size: int = 200, seed: int = 7, real_share: float = 0.3) -> DemoCatalog:
    """`size` listings with 1 to 4 photos each, the same for the same seed (blocking: run it in a
    thread). About `real_share` of them show real photographs when the wheels that carry them
    are installed; the rest are drawn products. Three edits follow: a price change, a photo
    change and a deletion, on the last listings."""
    if size < 1:
        raise ValueError("the demo catalog needs at least one listing")
    rng = random.Random(seed)
    sources = {name: Image.open(path).convert("RGB") for name, path in real_photo_paths().items()}
    photos: dict[str, bytes] = {}
    listings: list[DemoListing] = []
    for i in range(size):
        listing_id = f"demo-{i + 1:04d}"
        n_photos = rng.randint(1, 4)
        names = tuple(f"{listing_id}-{k}.jpg" for k in range(n_photos))
        if sources and rng.random() < real_share:
            key = rng.choice(sorted(sources))
            real = REAL_PHOTOS[key]
            for name in names:
                photos[name] = _reshot(sources[key], rng)
            title, category = real.title, real.category
            price = Decimal(rng.randint(900, 9900)) / 100
        else:
            product = rng.choice(PRODUCTS)
            colour_name = rng.choice(sorted(COLOURS))
            for name in names:
                photos[name] = _drawn(product, COLOURS[colour_name], rng)
            title = f"{colour_name.capitalize()} {product.noun}"
            category = product.category
            low, high = product.price_range
            price = Decimal(rng.randint(low * 100, high * 100)) / 100
        listings.append(
            DemoListing(
                listing_id=listing_id,
                title=title,
                category=category,
                price=price,
                currency=rng.choice(["USD", "USD", "USD", "EUR"]),
                shop_id=f"shop-{rng.randint(1, 12):02d}",
                photos=names,
            )
        )
    edits: list[DemoEdit] = []
    if size >= 4:
        cheaper = listings[-1]
        discounted = (cheaper.price * 8 / 10).quantize(Decimal("0.01"))
        edits.append(DemoEdit("price", replace(cheaper, price=discounted)))
        restyled = listings[-2]
        new_photo = f"{restyled.listing_id}-edit.jpg"
        product = rng.choice(PRODUCTS)
        photos[new_photo] = _drawn(product, COLOURS["yellow"], rng)
        changed = replace(
            restyled, title=f"Yellow {product.noun}", category=product.category, photos=(new_photo,)
        )
        edits.append(DemoEdit("photo", changed))
        edits.append(DemoEdit("delete", listings[-3]))
    return DemoCatalog(listings=listings, edits=edits, photos=photos)
