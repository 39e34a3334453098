"""Score calibration: the relevance cut-off and the duplicate threshold, on the evaluation and demo
catalogs, with the model's cosine scale (a MaxSim sum divided by the query's photos)."""

from __future__ import annotations

import argparse
import io
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

from bench.results import save
from lookalike.demo import REAL_PHOTOS, build_catalog
from models.embedder import Embedder
from models.evalset.catalog import EvalItem, build_eval_catalog
from models.evalset.realphotos import real_photo_paths
from models.evaluation.photos import DEFAULT_LIMITS, embed_images, load_photos
from models.settings import ModelSettings
from models.store.maxsim import maxsim_score

DEFAULT_OUT = Path(__file__).parent / "results" / "calibrate.json"
Matrix = npt.NDArray[np.float32]
# Results per query that count: the page shows 24.
TOP = 24
TARGET_PRECISION = 0.8
MIN_KEPT = 50


@dataclass
class Cutoff:
    task: str
    relevance: str
    threshold: float
    precision: float
    recall: float
    results: int


def cutoff(task: str, relevance: str, pairs: list[tuple[float, bool]]) -> Cutoff:
    """The lowest score whose results (every one scoring at least it) are relevant at
    TARGET_PRECISION or more; recall counts the relevant results kept."""
    ordered = sorted(pairs, key=lambda p: -p[0])
    relevant_total = sum(1 for _, r in ordered if r) or 1
    relevant = 0
    best = Cutoff(task, relevance, 1.0, 0.0, 0.0, 0)
    for kept, (score, is_relevant) in enumerate(ordered, start=1):
        relevant += is_relevant
        precision = relevant / kept
        # A handful of top results is no evidence: at least one per query's worth.
        if precision >= TARGET_PRECISION and kept >= MIN_KEPT:
            best = Cutoff(
                task,
                relevance,
                round(score, 3),
                round(precision, 3),
                round(relevant / relevant_total, 3),
                kept,
            )
    return best


def curve(pairs: list[tuple[float, bool]]) -> list[tuple[float, float, int]]:
    """(threshold, precision of the results scoring at least it, how many) every 0.05."""
    rows = []
    for t in np.arange(0.3, 1.0, 0.05):
        kept = [r for s, r in pairs if s >= t]
        rows.append(
            (round(float(t), 2), round(sum(kept) / len(kept), 3) if kept else 1.0, len(kept))
        )
    return rows


def eval_pairs(
    items: Sequence[EvalItem], vectors: dict[str, Matrix]
) -> dict[str, list[tuple[float, bool, bool]]]:
    """(score, same item, same category and shape) of each query's top results, per task."""
    listings = [(listing, item) for item in items for listing in item.listings]
    stored = [np.stack([vectors[k] for k in listing.photos]) for listing, _ in listings]

    def top(query: Matrix, exclude: str | None, item: EvalItem) -> list[tuple[float, bool, bool]]:
        scored = [
            (maxsim_score(query, m), other, listing.listing_id)
            for m, (listing, other) in zip(stored, listings, strict=True)
            if listing.listing_id != exclude
        ]
        scored.sort(key=lambda s: -s[0])
        return [
            (s, o.item_id == item.item_id, (o.category, o.shape) == (item.category, item.shape))
            for s, o, _ in scored[:TOP]
        ]

    buyer = [
        pair
        for item in items
        for key in item.buyer_photos
        for pair in top(vectors[key][None, :], None, item)
    ]
    similar = [
        pair
        for listing, item in listings
        for pair in top(np.stack([vectors[k] for k in listing.photos]), listing.listing_id, item)
    ]
    return {"search": buyer, "similar": similar}


@dataclass
class DuplicateThreshold:
    """The lowest threshold (a multiple of STEP) no pair of different products reaches, and the
    share of the pairs that are duplicates it groups."""

    threshold: float
    different_max: float
    copies_grouped: float
    reshoots_grouped: float
    siblings_grouped: float


STEP = 0.005


def duplicate_threshold(
    copies: list[float], reshoots: list[float], siblings: list[float], different: list[float]
) -> DuplicateThreshold:
    """Grouping hides every listing of a group but one: a false merge loses a product from the
    results, a missed one only shows a copy twice. So the threshold sits above every pair of
    different products measured."""
    t = (np.floor(max(different) / STEP) + 1) * STEP

    def share(scores: list[float]) -> float:
        return round(sum(s >= t for s in scores) / len(scores), 3) if scores else 0.0

    return DuplicateThreshold(
        round(float(t), 3),
        round(max(different), 4),
        share(copies),
        share(reshoots),
        share(siblings),
    )


def demo_pairs(
    titles: dict[str, tuple[str, bool]], vectors: dict[str, Matrix]
) -> tuple[list[float], list[float]]:
    """Scores of every ordered pair of demo listings: (reshoots of one real photo, different
    products). Two drawn listings of one title are left out: the same product or not is moot."""
    reshoots: list[float] = []
    different: list[float] = []
    ids = sorted(vectors)
    for a in ids:
        for b in ids:
            if a == b:
                continue
            (title_a, real_a), (title_b, real_b) = titles[a], titles[b]
            score = maxsim_score(vectors[a], vectors[b])
            if title_a != title_b:
                different.append(score)
            elif real_a and real_b:
                reshoots.append(score)
    return reshoots, different


def reencoded(data: bytes, quality: int, scale: float) -> bytes:
    """The same photo as another shop would upload it: resized and saved again."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = image.size
    image = image.resize((max(1, int(w * scale)), max(1, int(h * scale))))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=360)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--split", default="test")
    parser.add_argument("--demo-size", type=int, default=200)
    parser.add_argument("--checkpoint", type=Path, default=None, help="a fine-tuned model")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    settings = ModelSettings(device="cpu", model_checkpoint=args.checkpoint)
    embedder = Embedder.from_settings(settings)
    pre = embedder.preprocessing

    catalog = build_eval_catalog(args.items, args.seed)
    items = catalog.split(args.split)
    keys = [key for item in items for key in item.photos]
    images = load_photos(catalog, keys, pre, workers=2)
    vectors = dict(zip(keys, embed_images(embedder, images), strict=True))
    pairs = eval_pairs(items, vectors)
    cutoffs = [
        cutoff(task, relevance, [(s, flags[i]) for s, *flags in found])
        for task, found in pairs.items()
        for i, relevance in enumerate(("same item", "same category and shape"))
    ]

    # Duplicates: one photo re-encoded and resized (another shop's upload of it) against the
    # closest listing of the same item that has other shots of it.
    rendered = {key: catalog.photo_bytes(key) for item in items[:40] for key in item.photos}
    copies: list[float] = []
    siblings: list[float] = []
    different: list[float] = []
    others = [(listing, item) for item in items for listing in item.listings]
    for item in items[:40]:
        first, second = item.listings[0], item.listings[1]
        original = np.stack([vectors[k] for k in first.photos])
        different.append(
            max(
                maxsim_score(np.stack([vectors[k] for k in listing.photos]), original)
                for listing, other in others
                if other.item_id != item.item_id
            )
        )
        copy_images = [
            pre.load(reencoded(rendered[k], 70, 0.8), DEFAULT_LIMITS) for k in first.photos
        ]
        copy = embedder.embed(copy_images)
        copies.append(maxsim_score(copy, original))
        siblings.append(maxsim_score(np.stack([vectors[k] for k in second.photos]), original))

    # The demo: the coffee photo as a shopper uploads it, against every demo listing.
    demo = build_catalog(args.demo_size)
    demo_vectors = {
        listing.listing_id: embedder.embed(
            [pre.load(demo.photos[name], DEFAULT_LIMITS) for name in listing.photos]
        )
        for listing in demo.listings
    }
    real_titles = {photo.title for photo in REAL_PHOTOS.values()}
    titles = {li.listing_id: (li.title, li.title in real_titles) for li in demo.listings}
    reshoots, demo_different = demo_pairs(titles, demo_vectors)
    grouping = duplicate_threshold(copies, reshoots, siblings, different + demo_different)
    coffee_path = real_photo_paths()["coffee"]
    coffee = embedder.embed([pre.load(coffee_path.read_bytes(), DEFAULT_LIMITS)])
    demo_scores = sorted(
        ((maxsim_score(coffee, demo_vectors[li.listing_id]), li.title) for li in demo.listings),
        reverse=True,
    )
    by_title: dict[str, float] = {}
    for score, title in demo_scores:
        by_title.setdefault(title, round(score, 3))

    print("| task | relevant = | cut-off | precision | recall | results kept |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for c in cutoffs:
        print(
            f"| {c.task} | {c.relevance} | {c.threshold:.3f} | {c.precision:.3f} "
            f"| {c.recall:.3f} | {c.results} |"
        )
    for task, found in pairs.items():
        print(f"\n{task}: threshold, precision (same item), results")
        for t, precision, kept in curve([(s, same) for s, same, _ in found]):
            print(f"  {t:.2f}  {precision:.3f}  {kept}")
    print(
        f"\nsame photo re-encoded: min {min(copies):.3f}, median {np.median(copies):.3f}; "
        f"another seller's shots of the same item: max {max(siblings):.3f}, "
        f"median {np.median(siblings):.3f}"
    )
    print(
        f"\nduplicate threshold {grouping.threshold:.3f}: above every pair of different products "
        f"(max {grouping.different_max:.3f}); groups {grouping.copies_grouped:.0%} of re-encoded "
        f"copies, {grouping.reshoots_grouped:.0%} of the demo's reshoots of one photo, "
        f"{grouping.siblings_grouped:.0%} of other shots of the same item"
    )
    print("\ncoffee photo on the demo, best score per title:")
    for title, score in by_title.items():
        print(f"  {score:.3f}  {title}")
    result = {
        "machine": platform.processor() or platform.machine(),
        "model_id": embedder.model_id,
        "split": args.split,
        "items": len(items),
        "cutoffs": [asdict(c) for c in cutoffs],
        "curves": {
            task: curve([(s, same) for s, same, _ in found]) for task, found in pairs.items()
        },
        "duplicates": {
            "reencoded_min": round(min(copies), 4),
            "reencoded_median": round(float(np.median(copies)), 4),
            "sibling_max": round(max(siblings), 4),
            "sibling_median": round(float(np.median(siblings)), 4),
            "different_max": round(max(different), 4),
            "demo_reshoot_median": round(float(np.median(reshoots)), 4),
            "demo_different_max": round(max(demo_different), 4),
            "grouping": asdict(grouping),
        },
        "demo_coffee_best_by_title": by_title,
        "seconds": round(time.perf_counter() - started, 1),
    }
    save(args.out, result)


if __name__ == "__main__":
    main()
