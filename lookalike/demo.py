"""A deterministic demo catalog: real photographs from installed wheels plus drawn product shots."""

from __future__ import annotations

import io
import math
import random
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from PIL import Image, ImageDraw, ImageEnhance, ImageOps

from models.evalset.products import COLOURS as COLOURS
from models.evalset.products import PRODUCTS as PRODUCTS
from models.evalset.products import Product as Product
from models.evalset.products import darker
from models.evalset.realphotos import REAL_PHOTOS as REAL_PHOTOS
from models.evalset.realphotos import RealPhoto as RealPhoto
from models.evalset.realphotos import real_photo_paths as real_photo_paths
from models.events import ImageRef, ListingDeleted, ListingUpserted, Price

PHOTO_SIDE = 360


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
    draw.rectangle((0, floor, PHOTO_SIDE, PHOTO_SIDE), fill=darker(background))
    size = PHOTO_SIDE * rng.uniform(0.28, 0.38)
    cx = PHOTO_SIDE / 2 + rng.uniform(-30, 30)
    cy = PHOTO_SIDE / 2 + rng.uniform(-20, 20)
    product.paint(draw, cx, cy, size, colour)
    image = image.rotate(
        rng.uniform(-8, 8), resample=Image.Resampling.BICUBIC, fillcolor=background
    )
    return _jpeg(image)


def _turned(image: Image.Image, degrees: float) -> Image.Image:
    """`image` turned by `degrees`, then cut to the largest centred rectangle of its shape that
    the turned photo covers: a real reshoot has no black wedges in its corners."""
    w, h = image.size
    turned = image.rotate(degrees, resample=Image.Resampling.BILINEAR)
    c, s = abs(math.cos(math.radians(degrees))), abs(math.sin(math.radians(degrees)))
    # The w x h frame turned by the angle covers a centred k*w x k*h rectangle for k up to this.
    k = min(w / (w * c + h * s), h / (w * s + h * c))
    # One pixel in from the edge: bilinear sampling there still blends in the fill.
    iw, ih = int(w * k) - 2, int(h * k) - 2
    left, top = (w - iw) // 2, (h - ih) // 2
    return turned.crop((left, top, left + iw, top + ih))


def _reshot(source: Image.Image, rng: random.Random) -> bytes:
    """Another photo of the same real thing: a crop, a slight turn, a change of light."""
    w, h = source.size
    scale = rng.uniform(0.7, 0.95)
    cw, ch = int(w * scale), int(h * scale)
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    image = _turned(source.crop((x, y, x + cw, y + ch)), rng.uniform(-5, 5))
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
