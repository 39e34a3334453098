"""Drawing the evaluation photos: item templates, sellers' product shots and buyer photos."""

from __future__ import annotations

import io
import math
import random
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFilter, ImageOps

from models.evalset.products import COLOURS, PRODUCTS, RGB, darker
from models.evalset.realphotos import load_photo
from models.evalset.spec import PRINT, ItemSpec, PhotoKey, item_spec, parse_key, stable_rng
from models.evalset.spec import stable_seed as _seed

Floats = NDArray[np.float32]
Mask = NDArray[np.bool_]

TEMPLATE_SIDE = 384
PRODUCT_SIDE = 320
PRODUCT_QUALITY = 90
BUYER_SIZE = (400, 300)
BUYER_QUALITY = (30, 75)
# The object's bounding box (long side) as a share of the buyer photo's long side.
BUYER_OBJECT_SHARE = (0.28, 0.55)
BUYER_OCCLUSION = (0.10, 0.30)

# Prints are crops of these; backgrounds and clutter come only from BACKGROUND_SOURCES, so a
# buyer photo never shows another item's picture.
PRINT_SOURCES: tuple[str, ...] = (
    "chelsea",
    "coffee",
    "astronaut",
    "rocket",
    "motorcycle",
    "flower",
    "color",
)
BACKGROUND_SOURCES: tuple[str, ...] = ("china", "retina", "hubble", "brick", "grass", "gravel")
# Where a source is usable: the retina photo is a disc on black.
_SAFE_BOX: dict[str, tuple[float, float, float, float]] = {"retina": (0.22, 0.22, 0.78, 0.78)}

# Painters draw onto a label image in this colour: body pixels come out (255|178, 0, 0) (lit or
# in shade), fittings in their own grey, background black.
_BODY: RGB = (255, 0, 0)
_PAINTERS = {product.name: product.paint for product in PRODUCTS}
_WIDTH = {"slim": 0.7, "regular": 1.0, "wide": 1.35}
_PRINT_ASPECT = {
    "portrait": (0.74, 1.0),
    "landscape": (1.0, 0.74),
    "square": (1.0, 1.0),
    "round": (1.0, 1.0),
}
ACCENTS: tuple[RGB, ...] = (
    (245, 245, 240),
    (25, 25, 25),
    (212, 175, 55),
    (240, 228, 200),
    (25, 35, 85),
    (185, 185, 190),
    (150, 30, 40),
)
DECORATIONS = ("band", "two_bands", "stripes", "hstripes", "diagonal", "dots", "panel", "zigzag")
_MATS: tuple[RGB, ...] = ((242, 238, 226), (250, 250, 247), (30, 30, 30))


def render_photo(seed: int, key: str) -> bytes:
    """The JPEG for a photo key: a pure function of (seed, key)."""
    parsed = parse_key(key)
    if parsed.is_buyer:
        return _buyer_photo(seed, parsed)
    return _product_photo(seed, parsed)


# --- item templates: the object as RGBA, drawn once per item -----------------------------------


@lru_cache(maxsize=64)
def item_template(seed: int, index: int) -> Image.Image:
    """The item's object, RGBA, cropped to its silhouette (cached; do not modify in place)."""
    spec = item_spec(seed, index)
    rng = stable_rng(seed, "item", index)
    nprng = np.random.default_rng(_seed(seed, "item-texture", index))
    if spec.category == PRINT:
        image = _print_template(spec, rng, nprng)
    else:
        image = _drawn_template(spec, rng, nprng)
    box = image.getchannel("A").getbbox()
    return image.crop(box) if box else image


def _drawn_template(spec: ItemSpec, rng: random.Random, nprng: np.random.Generator) -> Image.Image:
    side = TEMPLATE_SIDE
    big = side * 2  # labels are drawn at twice the size, for smooth silhouette edges
    labels = Image.new("RGB", (big, big))
    _PAINTERS[spec.category](ImageDraw.Draw(labels), big / 2, big / 2, big / 2 / 1.3, _BODY)
    # One uint32 per pixel (RGBA bytes), so reshaping gathers one array instead of three.
    codes = np.asarray(labels.convert("RGBA")).view(np.uint32)[..., 0]
    proportions = (rng.uniform(0.92, 1.08), rng.uniform(0.92, 1.08))
    codes = _reshape(codes, codes[0, 0], spec.shape, *proportions)
    inside = (codes != codes[0, 0]).astype(np.uint8)
    alpha = (
        inside[0::2, 0::2] + inside[1::2, 0::2] + inside[0::2, 1::2] + inside[1::2, 1::2]
    ) / np.float32(4)
    small = np.ascontiguousarray(codes[::2, ::2]).view(np.uint8).reshape(side, side, 4)[..., :3]
    body = (small[..., 0] > 0) & (small[..., 1] == 0) & (small[..., 2] == 0)
    fitting = inside[::2, ::2].astype(bool) & ~body
    shade = np.where(body, small[..., 0].astype(np.float32) / 255, np.float32(1.0))
    ys, xs = np.nonzero(alpha)
    x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    u, v = _box_coords((side, side), (x0, y0, x1, y1))
    base = COLOURS[spec.colour]
    colour = np.empty((side, side, 3), np.float32)
    colour[:] = base
    colour[_decoration(rng, u, v, (y1 - y0) / (x1 - x0)) & body] = _accent(rng, base)
    mult, gloss = _material(spec.material, rng, nprng, u, v)
    rgb = np.minimum(colour * (mult * shade)[..., None], 255)
    rgb += (255 - rgb) * gloss[..., None]
    rgb[fitting] = small[fitting] * (1.06 - 0.15 * np.clip(u[fitting], 0, 1))[:, None]
    return _rgba(rgb, alpha)


def _reshape(
    codes: NDArray[np.uint32], empty: np.uint32, shape: str, sx: float, sy: float
) -> NDArray[np.uint32]:
    """The shape attribute: the silhouette narrowed, widened or tapered (nearest-neighbour, so
    label values stay exact), with the item's own proportions on top."""
    h, w = codes.shape
    cy, cx = h / 2, w / 2
    rows = np.nonzero((codes != empty).any(axis=1))[0]
    top, bottom = cy + (rows[0] - cy) * sy, cy + (rows[-1] - cy) * sy
    out_y = np.arange(h, dtype=np.float32)
    src_y = np.clip(np.rint(cy + (out_y - cy) / sy), 0, h - 1).astype(np.intp)
    if shape == "tapered":
        t = np.clip((out_y - top) / max(bottom - top, 1.0), 0, 1)
        k = sx * (0.6 + 0.55 * t)
    else:
        k = np.full(h, sx * _WIDTH[shape], np.float32)
    out_x = np.arange(w, dtype=np.float32)
    src_x = np.clip(np.rint(cx + (out_x[None, :] - cx) / k[:, None]), 0, w - 1).astype(np.intp)
    out: NDArray[np.uint32] = codes[src_y[:, None], src_x]
    return out


def _box_coords(size: tuple[int, int], box: tuple[int, int, int, int]) -> tuple[Floats, Floats]:
    """Per-pixel coordinates in units of the box (0..1 inside it), shape (h, w)."""
    h, w = size
    x0, y0, x1, y1 = box
    u = (np.arange(w, dtype=np.float32) - x0) / max(x1 - x0, 1)
    v = (np.arange(h, dtype=np.float32) - y0) / max(y1 - y0, 1)
    return np.broadcast_to(u[None, :], (h, w)), np.broadcast_to(v[:, None], (h, w))


def _luma(c: RGB) -> float:
    return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]


def _accent(rng: random.Random, base: RGB) -> RGB:
    contrasting = [a for a in ACCENTS if abs(_luma(a) - _luma(base)) > 60]
    return rng.choice(contrasting or [darker(base)])


def _decoration(rng: random.Random, u: Floats, v: Floats, aspect: float) -> Mask:
    """The item's own markings (where the accent colour goes), so that two items with the same
    attributes still look different. `aspect` is the box's height over its width."""
    kind = rng.choice(DECORATIONS)
    vw = v * aspect  # v in units of the box's width, so patterns keep square proportions
    if kind == "band":
        a, b = rng.uniform(0.15, 0.7), rng.uniform(0.08, 0.16)
        return (v > a) & (v < a + b)
    if kind == "two_bands":
        a, b, gap = rng.uniform(0.15, 0.55), rng.uniform(0.04, 0.07), rng.uniform(0.05, 0.15)
        return ((v > a) & (v < a + b)) | ((v > a + b + gap) & (v < a + 2 * b + gap))
    if kind in ("stripes", "hstripes", "diagonal"):
        period, duty, phase = rng.uniform(0.12, 0.24), rng.uniform(0.2, 0.33), rng.random()
        coord = {"stripes": u, "hstripes": vw, "diagonal": (u + vw) * 0.7071}[kind]
        return ((coord / period + phase) % 1.0) < duty
    if kind == "dots":
        period, radius = rng.uniform(0.14, 0.24), rng.uniform(0.2, 0.3)
        du = (u / period + rng.random()) % 1.0 - 0.5
        dv = (vw / period + rng.random()) % 1.0 - 0.5
        return du * du + dv * dv < radius * radius
    if kind == "panel":
        pw, ph = rng.uniform(0.3, 0.5), rng.uniform(0.2, 0.35)
        a, b = rng.uniform(0.1, 0.9 - pw), rng.uniform(0.2, 0.9 - ph)
        return (u > a) & (u < a + pw) & (v > b) & (v < b + ph)
    centre, amplitude = rng.uniform(0.25, 0.7), rng.uniform(0.03, 0.07)
    period, half, phase = rng.uniform(0.15, 0.3), rng.uniform(0.03, 0.05), rng.random()
    tri = np.abs((u / period + phase) % 1.0 - 0.5) * 4 - 1
    mask: Mask = np.abs(v - (centre + amplitude * tri)) < half
    return mask


def _smooth_noise(nprng: np.random.Generator, shape: tuple[int, int], cells: int) -> Floats:
    """Low-frequency noise in [0, 1]: a few random cells upsampled smoothly."""
    small = nprng.random((cells, cells), dtype=np.float32)
    image = Image.fromarray(small).resize((shape[1], shape[0]), Image.Resampling.BICUBIC)
    return np.clip(np.asarray(image, dtype=np.float32), 0, 1)


def _material(
    material: str, rng: random.Random, nprng: np.random.Generator, u: Floats, v: Floats
) -> tuple[Floats, Floats]:
    """A brightness multiplier and a gloss (blend towards white) per pixel for a material."""
    shape = (u.shape[0], u.shape[1])
    uc = np.clip(u, 0, 1)
    light = 1.08 - 0.2 * uc  # lit from the left
    none = np.zeros(shape, np.float32)
    if material == "matte":
        return light * (0.95 + 0.1 * _smooth_noise(nprng, shape, 6)), none
    if material == "glossy":
        hx, hy = rng.uniform(0.2, 0.35), rng.uniform(0.3, 0.55)
        streak = np.exp(-(((u - hx) / 0.07) ** 2 + ((v - hy) / 0.28) ** 2))
        spot = np.exp(-(((u - hx - 0.06) / 0.04) ** 2 + ((v - hy + 0.2) / 0.05) ** 2))
        return 1.15 - 0.38 * uc, np.minimum(0.72 * streak + 0.6 * spot, 0.9)
    if material == "wood":
        rings = rng.uniform(4.0, 8.0)
        warp = _smooth_noise(nprng, shape, 4)
        grain = 0.5 + 0.5 * np.sin(2 * np.pi * (u * rings + 1.3 * warp + 0.15 * v))
        fibres = np.asarray(nprng.standard_normal(shape[1], dtype=np.float32))[None, :]
        return light * (0.7 + 0.36 * grain**2) * (1 + 0.05 * fibres), none
    if material == "metal":
        rows = nprng.standard_normal((shape[0], max(2, shape[1] // 24)), dtype=np.float32)
        streaks = np.asarray(
            Image.fromarray(rows).resize((shape[1], shape[0]), Image.Resampling.BILINEAR),
            dtype=np.float32,
        )
        band = rng.uniform(0.25, 0.5)
        sheen = np.exp(-(((v - band) / 0.16) ** 2))
        mult = (0.76 + 0.42 * sheen) * (1 + 0.07 * streaks) * (1.04 - 0.1 * uc)
        return mult, 0.35 * np.exp(-(((v - band) / 0.035) ** 2))
    if material == "fabric":
        period = rng.choice((5, 6, 7))
        yy, xx = np.indices(shape)
        weave = ((xx // period + yy // period) % 2).astype(np.float32)
        seams = ((xx % period) == 0) | ((yy % period) == 0)
        fuzz = nprng.standard_normal(shape, dtype=np.float32)
        return light * (0.9 + 0.12 * weave - 0.14 * seams + 0.035 * fuzz), none
    if material != "stone":
        raise ValueError(f"unknown material {material!r}")
    speck = nprng.random(shape, dtype=np.float32)
    dark = Image.fromarray(((speck < 0.035) * 255).astype(np.uint8))
    dark_blur = np.asarray(dark.filter(ImageFilter.GaussianBlur(0.9)), dtype=np.float32) / 255
    mottle = _smooth_noise(nprng, shape, 9)
    mult = light * (0.86 + 0.2 * mottle) * (1 - 0.9 * dark_blur)
    return mult, (speck > 0.975).astype(np.float32) * 0.35


def _print_template(spec: ItemSpec, rng: random.Random, nprng: np.random.Generator) -> Image.Image:
    """A framed print: the frame carries colour and material, the picture is a crop of a real
    photograph (so a few photographs give many distinct prints)."""
    aw, ah = _PRINT_ASPECT[spec.shape]
    jitter = rng.uniform(0.95, 1.05)
    w = round(TEMPLATE_SIDE * 0.92 * min(1.0, aw * jitter))
    h = round(TEMPLATE_SIDE * 0.92 * min(1.0, ah / jitter))
    short = min(w, h)
    frame = rng.uniform(0.06, 0.11) * short
    mat = rng.uniform(0.05, 0.1) * short if rng.random() < 0.55 else 0.0
    mat_colour = np.array(rng.choice(_MATS), np.float32)
    round_ = spec.shape == "round"

    def region(inset: float) -> Floats:
        canvas = Image.new("L", (w * 2, h * 2))
        box = (2 * inset, 2 * inset, 2 * (w - inset) - 1, 2 * (h - inset) - 1)
        draw = ImageDraw.Draw(canvas)
        (draw.ellipse if round_ else draw.rectangle)(box, fill=255)
        shrunk = canvas.resize((w, h), Image.Resampling.BOX)
        return np.asarray(shrunk, dtype=np.float32) / np.float32(255)

    outer, opening, window = region(0), region(frame), region(frame + mat)
    outer_bevel = outer - region(frame * 0.3)
    inner_bevel = region(frame * 0.75) - opening
    inner_shadow = opening - region(frame + max(2.0, frame * 0.2))
    u, v = _box_coords((h, w), (0, 0, w, h))
    mult, gloss = _material(spec.material, rng, nprng, u, v)
    mult = mult * (1 - 0.28 * outer_bevel + 0.14 * inner_bevel)
    frame_rgb = np.minimum(np.array(COLOURS[spec.colour], np.float32) * mult[..., None], 255)
    frame_rgb += (255 - frame_rgb) * gloss[..., None]
    inset = round(frame + mat)
    picture = np.empty((h, w, 3), np.float32)
    picture[:] = mat_colour
    pw, ph = w - 2 * inset, h - 2 * inset
    picture[inset : inset + ph, inset : inset + pw] = _picture(rng, (pw, ph))
    content = mat_colour * (1 - window[..., None]) + picture * window[..., None]
    content *= (1 - 0.35 * inner_shadow)[..., None]
    rgb = frame_rgb * (1 - opening[..., None]) + content * opening[..., None]
    return _rgba(rgb, outer)


def _picture(rng: random.Random, size: tuple[int, int]) -> Floats:
    source = load_photo(rng.choice(PRINT_SOURCES))
    sw, sh = source.size
    pw, ph = size
    cw = min(sw, sh * pw / ph) * rng.uniform(0.4, 1.0)
    ch = cw * ph / pw
    x, y = rng.uniform(0, sw - cw), rng.uniform(0, sh - ch)
    image = source.resize(size, Image.Resampling.BICUBIC, box=(x, y, x + cw, y + ch))
    if rng.random() < 0.3:
        image = ImageOps.mirror(image)
    if rng.random() < 0.15:  # a black-and-white print
        image = ImageOps.grayscale(image).convert("RGB")
    return np.asarray(image, dtype=np.float32)


def _rgba(rgb: Floats, alpha: Floats) -> Image.Image:
    pixels = np.dstack([np.clip(rgb, 0, 255), alpha * 255]).round().astype(np.uint8)
    return Image.fromarray(pixels)


# --- photos ------------------------------------------------------------------------------------


def _jpeg(image: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, format="JPEG", quality=quality)
    return out.getvalue()


def _resized(image: Image.Image, long_side: float, squash: float = 1.0) -> Image.Image:
    w, h = image.size
    k = long_side / max(w, h)
    size = (max(1, round(w * k * squash)), max(1, round(h * k)))
    return image.resize(size, Image.Resampling.BICUBIC)


def _cropped(image: Image.Image) -> Image.Image:
    box = image.getchannel("A").getbbox()
    return image.crop(box) if box else image


def _fit(obj: Image.Image, size: tuple[int, int], share: float) -> Image.Image:
    """Shrunk, if need be, to at most `share` of the frame in each direction."""
    w, h = obj.size
    k = min(1.0, share * size[0] / w, share * size[1] / h)
    return obj if k >= 1.0 else _resized(obj, max(w, h) * k)


def _place(obj: Image.Image, size: tuple[int, int], cx: float, cy: float) -> tuple[int, int]:
    """Top-left corner that centres `obj` near (cx, cy), kept inside the frame."""
    w, h = obj.size
    x = min(max(cx - w / 2, 0), max(size[0] - w, 0))
    y = min(max(cy - h / 2, 0), max(size[1] - h, 0))
    return round(x), round(y)


def _shadow(
    scene: Image.Image,
    obj: Image.Image,
    at: tuple[int, int],
    offset: tuple[int, int],
    radius: float,
    opacity: float,
) -> None:
    """A soft contact shadow of `obj` (placed at `at`) on the scene."""
    alpha = obj.getchannel("A")
    pad = round(radius * 2)
    padded = Image.new("L", (alpha.width + 2 * pad, alpha.height + 2 * pad))
    padded.paste(alpha, (pad, pad))
    blurred = padded.filter(ImageFilter.GaussianBlur(radius)).point(lambda a: round(a * opacity))
    scene.paste((0, 0, 0), (at[0] + offset[0] - pad, at[1] + offset[1] - pad), blurred)


def _product_photo(seed: int, key: PhotoKey) -> bytes:
    """A seller's product shot: centred on a plain light backdrop. The seller (listing) fixes
    the backdrop, light and framing; each shot varies angle, scale and position."""
    template = item_template(seed, key.index)
    style = stable_rng(seed, "seller", key.index, key.listing)
    rng = stable_rng(seed, "shot", key.index, key.listing, key.number)
    side = PRODUCT_SIDE
    tone = style.uniform(222, 250)
    tint = np.array([style.uniform(-8, 8) for _ in range(3)], np.float32)
    fall = np.linspace(0, 1, side, dtype=np.float32)
    if style.random() < 0.5:
        fall = fall[::-1]
    rows = tone + tint[None, :] - style.uniform(0, 30) * fall[:, None]
    if style.random() < 0.4:  # a sweep: the floor meets the wall
        rows[round(side * style.uniform(0.72, 0.88)) :] *= 0.9
    pixels = np.broadcast_to(np.clip(rows, 0, 255)[:, None, :], (side, side, 3))
    scene = Image.fromarray(pixels.astype(np.uint8))
    framing = style.uniform(0.6, 0.74)
    obj = _resized(template, side * framing * rng.uniform(0.9, 1.08), rng.uniform(0.94, 1.06))
    if rng.random() < 0.25:
        obj = ImageOps.mirror(obj)
    obj = _fit(
        obj.rotate(rng.uniform(-10, 10), Image.Resampling.BICUBIC, expand=True), (side,) * 2, 0.96
    )
    jitter = side * 0.05
    at = _place(
        obj,
        (side, side),
        side / 2 + rng.uniform(-jitter, jitter),
        side / 2 + rng.uniform(-jitter, jitter),
    )
    offset = (round(style.uniform(-4, 4)), round(style.uniform(3, 9)))
    _shadow(scene, obj, at, offset, style.uniform(4, 9), style.uniform(0.18, 0.4))
    scene.paste(obj, at, obj)
    return _jpeg(scene, PRODUCT_QUALITY)


def _buyer_photo(seed: int, key: PhotoKey) -> bytes:
    """A shopper's phone photo of the item: small in a cluttered real scene, at an angle, partly
    hidden, badly lit, blurred, noisy and heavily compressed."""
    rng = stable_rng(seed, "buyer", key.index, key.number)
    size = BUYER_SIZE if rng.random() < 0.6 else (BUYER_SIZE[1], BUYER_SIZE[0])
    w, h = size
    scene = _surface(rng, size)
    if rng.random() < 0.55:  # a wall behind a table top
        horizon = round(h * rng.uniform(0.35, 0.7))
        scene.paste(_surface(rng, (w, h - horizon)), (0, horizon))
    if rng.random() < 0.5:  # depth of field
        scene = scene.filter(ImageFilter.GaussianBlur(rng.uniform(0.8, 2.5)))
    long_side = max(size) * rng.uniform(*BUYER_OBJECT_SHARE)
    obj = _resized(item_template(seed, key.index), long_side, rng.uniform(0.95, 1.05))
    if rng.random() < 0.5:
        obj = ImageOps.mirror(obj)
    obj = _perspective(obj, rng, 0.12)
    obj = _cropped(obj.rotate(rng.uniform(-22, 22), Image.Resampling.BILINEAR, expand=True))
    obj = _fit(_resized(obj, long_side), size, 0.95)
    obj = _side_light(obj, rng)
    _distractors(scene, rng, long_side)
    at = _place(obj, size, w * rng.uniform(0.3, 0.7), h * rng.uniform(0.32, 0.68))
    offset = (round(rng.uniform(-8, 8)), round(rng.uniform(2, 10)))
    _shadow(scene, obj, at, offset, rng.uniform(3, 8), rng.uniform(0.25, 0.5))
    scene.paste(obj, at, obj)
    _occlude(scene, obj, at, rng)
    return _jpeg(_camera(scene, rng), rng.randint(*BUYER_QUALITY))


def _surface(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    """A crop of a background photograph or texture (textures tinted), filling `size`."""
    name = rng.choice(BACKGROUND_SOURCES)
    source = load_photo(name)
    sx0, sy0, sx1, sy1 = _SAFE_BOX.get(name, (0.0, 0.0, 1.0, 1.0))
    bw, bh = (sx1 - sx0) * source.width, (sy1 - sy0) * source.height
    w, h = size
    cw = min(bw, bh * w / h) * rng.uniform(0.3, 1.0)
    ch = cw * h / w
    x = sx0 * source.width + rng.uniform(0, bw - cw)
    y = sy0 * source.height + rng.uniform(0, bh - ch)
    image = source.resize(size, Image.Resampling.BILINEAR, box=(x, y, x + cw, y + ch))
    if image.mode == "L":
        dark = tuple(rng.randint(10, 110) for _ in range(3))
        light = tuple(rng.randint(140, 250) for _ in range(3))
        image = ImageOps.colorize(image, black=dark, white=light)
    if rng.random() < 0.5:
        image = ImageOps.mirror(image)
    return image.convert("RGB")


def _perspective(obj: Image.Image, rng: random.Random, strength: float) -> Image.Image:
    """Seen at an angle: the corners of the (padded) image pulled in by up to `strength`."""
    w, h = obj.size
    pad = max(1, round(strength * max(w, h)))
    padded = Image.new("RGBA", (w + 2 * pad, h + 2 * pad))
    padded.paste(obj, (pad, pad))
    pw, ph = padded.size

    def j() -> float:
        return rng.uniform(0, pad)

    # QUAD reads the output rectangle from this quadrilateral (UL, LL, LR, UR); every corner stays
    # in the padding, so the object is never cut.
    quad = (j(), j(), j(), ph - j(), pw - j(), ph - j(), pw - j(), j())
    return padded.transform(padded.size, Image.Transform.QUAD, quad, Image.Resampling.BILINEAR)


def _side_light(obj: Image.Image, rng: random.Random) -> Image.Image:
    pixels = np.asarray(obj, dtype=np.float32).copy()
    h, w = pixels.shape[:2]
    angle = rng.uniform(0, 2 * math.pi)
    ramp = (np.arange(w, dtype=np.float32)[None, :] / w - 0.5) * math.cos(angle)
    ramp = ramp + (np.arange(h, dtype=np.float32)[:, None] / h - 0.5) * math.sin(angle)
    pixels[..., :3] *= (1 + rng.uniform(0.1, 0.45) * ramp)[..., None]
    return Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8))


def _random_colour(rng: random.Random) -> RGB:
    return (rng.randint(0, 255), rng.randint(0, 255), rng.randint(0, 255))


def _distractors(scene: Image.Image, rng: random.Random, target: float) -> None:
    """Clutter: other things lying around, each smaller than the item."""
    w, h = scene.size
    draw = ImageDraw.Draw(scene)
    for _ in range(rng.randint(2, 5)):
        kind = rng.choice(("blob", "box", "poly", "patch", "line", "object", "object"))
        size = target * rng.uniform(0.25, 0.75)
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        colour = _random_colour(rng)
        angle = rng.uniform(0, 2 * math.pi)
        if kind == "blob":
            r1, r2 = size / 2, size / 2 * rng.uniform(0.4, 1.0)
            draw.ellipse((cx - r1, cy - r2, cx + r1, cy + r2), fill=colour)
        elif kind in ("box", "poly"):
            corners = 4 if kind == "box" else rng.randint(5, 8)
            points = []
            for i in range(corners):
                a = angle + 2 * math.pi * i / corners + rng.uniform(-0.3, 0.3)
                r = size / 2 * (1.0 if kind == "box" else rng.uniform(0.5, 1.0))
                points.append((cx + r * math.cos(a), cy + r * math.sin(a)))
            draw.polygon(points, fill=colour)
        elif kind == "line":
            length = size * 2
            end = (cx + length * math.cos(angle), cy + length * math.sin(angle))
            draw.line((cx, cy, *end), fill=colour, width=rng.randint(3, 10))
        else:
            if kind == "patch":
                pw = max(8, round(size))
                thing = _surface(rng, (pw, max(8, round(pw * rng.uniform(0.6, 1.4))))).convert(
                    "RGBA"
                )
            else:
                side = max(8, round(size * 1.3))
                thing = Image.new("RGBA", (side, side))
                painter = rng.choice(PRODUCTS).paint
                painter(ImageDraw.Draw(thing), side / 2, side / 2, side / 2 / 1.3, colour)
            thing = thing.rotate(math.degrees(angle), Image.Resampling.BILINEAR, expand=True)
            scene.paste(thing, (round(cx - thing.width / 2), round(cy - thing.height / 2)), thing)


def _occlude(
    scene: Image.Image, obj: Image.Image, at: tuple[int, int], rng: random.Random
) -> float:
    """Something in front hides 10-30 % of the object: the part of it beyond a line at a random
    angle, covered by a slab that reaches past the object's edge."""
    rows, columns = np.nonzero(np.asarray(obj.getchannel("A")) > 127)
    if columns.size == 0:
        return 0.0
    xs = columns.astype(np.float32) + at[0]
    ys = rows.astype(np.float32) + at[1]
    angle = rng.uniform(0, 2 * math.pi)
    c, s = math.cos(angle), math.sin(angle)
    p, q = xs * c + ys * s, -xs * s + ys * c
    cut = float(np.quantile(p, 1 - rng.uniform(*BUYER_OCCLUSION)))
    extent = max(obj.size)
    far = float(p.max()) + extent * rng.uniform(0.1, 0.6)
    q0 = float(q.min()) - extent * rng.uniform(0.05, 0.3)
    q1 = float(q.max()) + extent * rng.uniform(0.05, 0.3)
    corners = [(cut, q0), (far, q0), (far, q1), (cut, q1)]
    points = [(pp * c - qq * s, pp * s + qq * c) for pp, qq in corners]
    mask = Image.new("L", scene.size)
    ImageDraw.Draw(mask).polygon(points, fill=255)
    shade = mask.filter(ImageFilter.GaussianBlur(6)).point(lambda a: round(a * 0.4))
    scene.paste((0, 0, 0), (round(3 * c), round(3 * s)), shade)
    kind = rng.random()
    if kind < 0.45:
        cover = _surface(rng, scene.size)
    elif kind < 0.7:  # a hand or arm
        skin = rng.choice(((224, 172, 138), (198, 134, 96), (141, 85, 54), (241, 194, 167)))
        cover = Image.new("RGB", scene.size, skin)
    else:
        cover = Image.new("RGB", scene.size, _random_colour(rng))
    scene.paste(cover, (0, 0), mask)
    hidden = np.asarray(mask)[rows + at[1], columns + at[0]] > 127
    return float(hidden.mean())  # the share of the object hidden


@lru_cache(maxsize=1)
def _noise_tile() -> Floats:
    """Unit Gaussian noise, drawn once per process from a fixed seed; photos take crops of it
    (drawing fresh noise for each photo cost a fifth of its time)."""
    side = max(BUYER_SIZE) + 200
    return np.random.default_rng(20261126).standard_normal((side, side, 3), dtype=np.float32)


def _camera(scene: Image.Image, rng: random.Random) -> Image.Image:
    """A phone camera: optics blur, uneven light, white balance, contrast, sensor noise."""
    if rng.random() < 0.75:
        scene = scene.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.5)))
    elif rng.random() < 0.6:  # a shaken hand
        taps = [0.0] * 25
        line = rng.choice(((10, 11, 12, 13, 14), (2, 7, 12, 17, 22), (0, 6, 12, 18, 24)))
        for i in line:
            taps[i] = 1.0
        scene = scene.filter(ImageFilter.Kernel((5, 5), taps, scale=5))
    gamma = rng.uniform(0.8, 1.25)
    pixels = np.asarray(scene.point([round(255 * (i / 255) ** gamma) for i in range(256)] * 3))
    h, w = pixels.shape[:2]
    angle = rng.uniform(0, 2 * math.pi)
    xs = np.arange(w, dtype=np.float32)[None, :] / w - 0.5
    ys = np.arange(h, dtype=np.float32)[:, None] / h - 0.5
    light = rng.uniform(0.65, 1.2) * (
        1 + rng.uniform(0, 0.7) * (xs * math.cos(angle) + ys * math.sin(angle))
    )
    if rng.random() < 0.5:
        light = light * (1 - rng.uniform(0.2, 0.7) * (xs * xs + ys * ys))
    contrast = rng.uniform(0.8, 1.15)
    gains = np.array([rng.uniform(0.85, 1.15) * contrast for _ in range(3)], np.float32)
    tile = _noise_tile()
    y, x = rng.randrange(tile.shape[0] - h), rng.randrange(tile.shape[1] - w)
    out = tile[y : y + h, x : x + w] * np.float32(rng.uniform(2, 9))  # sensor noise, grey levels
    out += pixels * (light[..., None] * gains)
    out += 127.5 * (1 - contrast) + 0.5  # + 0.5: the cast below then rounds
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))
