"""`lookalike eval`: retrieval quality of the ImageNet features or a trained checkpoint."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from models.embedder import Embedder
from models.evalset.catalog import build_eval_catalog
from models.evaluation.harness import EvalReport, evaluate_in_store, split_photo_keys
from models.evaluation.metrics import KS
from models.evaluation.photos import embed_images, load_photos
from models.settings import ModelSettings


@dataclass(frozen=True)
class EvalOptions:
    items: int = 360
    seed: int = 11
    split: str = "test"
    workers: int | None = None
    progress: bool = True


def run_eval(model: ModelSettings, options: EvalOptions) -> EvalReport:
    """Embed the split's photos with the configured model, index them, query, score (blocking)."""
    catalog = build_eval_catalog(options.items, options.seed)
    embedder = Embedder.from_settings(model)
    items = catalog.split(options.split)
    keys = split_photo_keys(items)
    images = load_photos(
        catalog, keys, embedder.preprocessing, workers=options.workers, progress=options.progress
    )
    vectors = dict(
        zip(keys, embed_images(embedder, images, progress=options.progress), strict=True)
    )
    return asyncio.run(evaluate_in_store(catalog, options.split, embedder.model_id, vectors))


def format_report(report: EvalReport) -> str:
    header = f"{'':24}" + "".join(f"{f'recall@{k}':>11}" for k in KS) + f"{'mAP':>8}"
    lines = [
        f"model {report.model_id}  split {report.split}  items {report.items}  "
        f"listings {report.listings}",
        header,
    ]
    for label, scores in (
        ("buyer photo -> listing", report.buyer_to_listing),
        ("listing -> listing", report.listing_to_listing),
    ):
        cells = "".join(f"{scores.recall[k]:>11.3f}" for k in KS)
        lines.append(f"{label:24}{cells}{scores.mean_average_precision:>8.3f}")
    agreement = "  ".join(f"{k} {v:.3f}" for k, v in report.attribute_agreement.items())
    lines.append(f"top-10 attribute agreement (buyer queries): {agreement}")
    return "\n".join(lines)
