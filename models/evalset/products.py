"""Drawn products: named colours and the painters that draw each kind of product."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from PIL import ImageDraw

RGB = tuple[int, int, int]

COLOURS: dict[str, RGB] = {
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

# A painter draws one product centred on (cx, cy) at scale s (the product spans about 1.6 s) in
# colour c. Parts in `darker(c)` are the same surface in shade; parts in other fixed colours
# (a lamp's stand, a clock's face) are fittings that keep their colour whatever the product's.
Painter = Callable[[ImageDraw.ImageDraw, float, float, float, RGB], None]

_STAND: RGB = (60, 60, 60)
_CAP: RGB = (40, 40, 40)
_FACE: RGB = (240, 238, 230)
_HANDS: RGB = (35, 35, 35)


def darker(c: RGB) -> RGB:
    r, g, b = c
    return (int(r * 0.7), int(g * 0.7), int(b * 0.7))


def _width(s: float, share: float) -> int:
    return max(2, round(s * share))


def _mug(d: ImageDraw.ImageDraw, cx: float, cy: float, s: float, c: RGB) -> None:
    d.rectangle((cx - s * 0.5, cy - s * 0.55, cx + s * 0.35, cy + s * 0.55), fill=c)
    d.ellipse((cx - s * 0.5, cy - s * 0.65, cx + s * 0.35, cy - s * 0.45), fill=darker(c))
    d.arc(
        (cx + s * 0.15, cy - s * 0.3, cx + s * 0.7, cy + s * 0.3),
        -90,
        90,
        fill=c,
        width=_width(s, 0.12),
    )


def _shirt(d: ImageDraw.ImageDraw, cx: float, cy: float, s: float, c: RGB) -> None:
    pts = [(-0.3, -0.6), (-0.8, -0.3), (-0.6, 0.0), (-0.4, -0.15), (-0.4, 0.7), (0.4, 0.7)]
    pts += [(0.4, -0.15), (0.6, 0.0), (0.8, -0.3), (0.3, -0.6), (0.0, -0.45)]
    d.polygon([(cx + x * s, cy + y * s) for x, y in pts], fill=c)


def _lamp(d: ImageDraw.ImageDraw, cx: float, cy: float, s: float, c: RGB) -> None:
    d.polygon(
        [
            (cx - s * 0.2, cy - s * 0.7),
            (cx + s * 0.2, cy - s * 0.7),
            (cx + s * 0.45, cy - s * 0.15),
            (cx - s * 0.45, cy - s * 0.15),
        ],
        fill=c,
    )
    d.rectangle((cx - s * 0.04, cy - s * 0.15, cx + s * 0.04, cy + s * 0.55), fill=_STAND)
    d.ellipse((cx - s * 0.3, cy + s * 0.5, cx + s * 0.3, cy + s * 0.7), fill=_STAND)


def _vase(d: ImageDraw.ImageDraw, cx: float, cy: float, s: float, c: RGB) -> None:
    d.ellipse((cx - s * 0.45, cy - s * 0.2, cx + s * 0.45, cy + s * 0.7), fill=c)
    d.rectangle((cx - s * 0.15, cy - s * 0.7, cx + s * 0.15, cy), fill=c)
    d.ellipse((cx - s * 0.22, cy - s * 0.78, cx + s * 0.22, cy - s * 0.62), fill=darker(c))


def _cushion(d: ImageDraw.ImageDraw, cx: float, cy: float, s: float, c: RGB) -> None:
    box = (cx - s * 0.65, cy - s * 0.55, cx + s * 0.65, cy + s * 0.55)
    d.rounded_rectangle(box, radius=int(s * 0.2), fill=c)
    inset = s * 0.07
    for i in range(1, 5):
        x = box[0] + (box[2] - box[0]) * i / 5
        d.line((x, box[1] + inset, x, box[3] - inset), fill=darker(c), width=_width(s, 0.05))


def _bottle(d: ImageDraw.ImageDraw, cx: float, cy: float, s: float, c: RGB) -> None:
    d.rounded_rectangle(
        (cx - s * 0.28, cy - s * 0.35, cx + s * 0.28, cy + s * 0.75), radius=int(s * 0.1), fill=c
    )
    d.rectangle((cx - s * 0.1, cy - s * 0.7, cx + s * 0.1, cy - s * 0.3), fill=c)
    d.rectangle((cx - s * 0.12, cy - s * 0.8, cx + s * 0.12, cy - s * 0.68), fill=_CAP)


def _bag(d: ImageDraw.ImageDraw, cx: float, cy: float, s: float, c: RGB) -> None:
    # The handle first, so the body hides its ends.
    d.arc(
        (cx - s * 0.32, cy - s * 0.8, cx + s * 0.32, cy - s * 0.05),
        180,
        360,
        fill=darker(c),
        width=_width(s, 0.09),
    )
    d.polygon(
        [
            (cx - s * 0.5, cy - s * 0.35),
            (cx + s * 0.5, cy - s * 0.35),
            (cx + s * 0.62, cy + s * 0.65),
            (cx - s * 0.62, cy + s * 0.65),
        ],
        fill=c,
    )
    d.rectangle((cx - s * 0.5, cy - s * 0.35, cx + s * 0.5, cy - s * 0.22), fill=darker(c))


def _clock(d: ImageDraw.ImageDraw, cx: float, cy: float, s: float, c: RGB) -> None:
    # A desk alarm clock: two bells, a round case, a face with hands at ten past ten, two feet.
    for side in (-1, 1):
        bx = cx + side * s * 0.42
        d.ellipse((bx - s * 0.2, cy - s * 0.8, bx + s * 0.2, cy - s * 0.48), fill=darker(c))
        d.line(
            (cx + side * s * 0.3, cy + s * 0.45, cx + side * s * 0.5, cy + s * 0.78),
            fill=darker(c),
            width=_width(s, 0.08),
        )
    d.ellipse((cx - s * 0.6, cy - s * 0.6, cx + s * 0.6, cy + s * 0.6), fill=c)
    d.ellipse((cx - s * 0.44, cy - s * 0.44, cx + s * 0.44, cy + s * 0.44), fill=_FACE)
    d.line((cx, cy, cx - s * 0.22, cy - s * 0.14), fill=_HANDS, width=_width(s, 0.05))
    d.line((cx, cy, cx + s * 0.3, cy - s * 0.2), fill=_HANDS, width=_width(s, 0.035))
    d.ellipse((cx - s * 0.05, cy - s * 0.05, cx + s * 0.05, cy + s * 0.05), fill=_HANDS)


def _hat(d: ImageDraw.ImageDraw, cx: float, cy: float, s: float, c: RGB) -> None:
    d.rounded_rectangle(
        (cx - s * 0.42, cy - s * 0.55, cx + s * 0.42, cy + s * 0.3), radius=int(s * 0.18), fill=c
    )
    d.ellipse((cx - s * 0.8, cy + s * 0.12, cx + s * 0.8, cy + s * 0.48), fill=c)
    d.rectangle((cx - s * 0.42, cy + s * 0.02, cx + s * 0.42, cy + s * 0.2), fill=darker(c))


def _chair(d: ImageDraw.ImageDraw, cx: float, cy: float, s: float, c: RGB) -> None:
    post = s * 0.07
    for side in (-1, 1):
        x = cx + side * s * 0.36
        d.rectangle((x - post, cy - s * 0.8, x + post, cy + s * 0.75), fill=c)
        fx = cx + side * s * 0.44
        d.rectangle((fx - post, cy + s * 0.05, fx + post, cy + s * 0.75), fill=darker(c))
    d.rectangle((cx - s * 0.36, cy - s * 0.8, cx + s * 0.36, cy - s * 0.62), fill=c)
    d.rectangle((cx - s * 0.36, cy - s * 0.4, cx + s * 0.36, cy - s * 0.3), fill=c)
    d.polygon(
        [
            (cx - s * 0.4, cy - s * 0.05),
            (cx + s * 0.4, cy - s * 0.05),
            (cx + s * 0.52, cy + s * 0.08),
            (cx - s * 0.52, cy + s * 0.08),
        ],
        fill=c,
    )
    d.rectangle((cx - s * 0.52, cy + s * 0.08, cx + s * 0.52, cy + s * 0.16), fill=darker(c))


@dataclass(frozen=True)
class Product:
    """A kind of drawn product: how to paint it, what it is called and where it is listed."""

    name: str  # short class name, as the evaluation set labels it
    noun: str
    category: str
    paint: Painter
    price_range: tuple[int, int]


PRODUCTS: list[Product] = [
    Product("mug", "ceramic mug", "home_and_living/kitchen/mugs", _mug, (12, 40)),
    Product("t_shirt", "cotton t-shirt", "clothing/tops/t_shirts", _shirt, (15, 45)),
    Product("lamp", "table lamp", "home_and_living/lighting/lamps", _lamp, (35, 180)),
    Product("vase", "flower vase", "home_and_living/decor/vases", _vase, (20, 90)),
    Product("cushion", "striped cushion", "home_and_living/textiles/cushions", _cushion, (18, 60)),
    Product("bottle", "water bottle", "home_and_living/kitchen/bottles", _bottle, (10, 35)),
    Product("bag", "tote bag", "bags_and_purses/totes", _bag, (20, 120)),
    Product("clock", "alarm clock", "home_and_living/decor/clocks", _clock, (15, 70)),
    Product("hat", "felt hat", "accessories/hats", _hat, (18, 80)),
    Product("chair", "side chair", "home_and_living/furniture/chairs", _chair, (60, 400)),
]
