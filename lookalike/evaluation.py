"""`lookalike eval`: retrieval quality of the ImageNet features or a trained checkpoint."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from models.dataset.dataset import DataListing, Dataset, DatasetOptions, load_dataset
from models.embedder import Embedder
from models.evalset.catalog import build_eval_catalog
from models.evaluation.harness import EvalReport, evaluate_in_store, split_photo_keys
from models.evaluation.listings import KIND_KEYS, KINDS, DataReport, evaluate_listings
from models.evaluation.metrics import KS
from models.evaluation.photos import embed_images, load_photos
from models.images import ImageLimits
from models.network import variant
from models.settings import FetchSettings, ImageSettings, ModelSettings
from models.training.checkpoint import validation_curve
from models.training.source import stream_files

KIND_LABELS = {"buyer": "buyer photo -> listing", "listing": "listing -> listing"}


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


# -- a dataset manifest (eval --data) -----------------------------------------------------------


@dataclass(frozen=True)
class DataEvalOptions:
    data: DatasetOptions
    split: str = "test"
    workers: int | None = None
    progress: bool = True


@dataclass(frozen=True)
class DataEvaluation:
    """One model's report on a split and, with --compare, the other's on the same queries."""

    report: DataReport
    compare: DataReport | None = None


def embed_listings(
    embedder: Embedder,
    listings: Sequence[DataListing],
    limits: ImageLimits,
    workers: int | None = None,
    progress: bool = False,
) -> dict[str, npt.NDArray[np.float32]]:
    """Every photo of the listings (seller's, then buyers'), decoded the production way from its
    file, a chunk at a time, and embedded."""
    keys = list(dict.fromkeys(k for x in listings for k in (*x.photos, *x.buyer_photos)))
    out: dict[str, npt.NDArray[np.float32]] = {}
    with tqdm(
        total=len(keys),
        desc=f"embed {embedder.model_id}",
        unit="photo",
        file=sys.stderr,
        disable=not progress,
    ) as bar:
        done = 0
        for chunk in stream_files(keys, embedder.preprocessing, limits, workers):
            vectors = embedder.embed(chunk)
            out.update(zip(keys[done : done + len(chunk)], vectors, strict=True))
            done += len(chunk)
            bar.update(len(chunk))
    return out


def evaluate_dataset_model(
    model: ModelSettings,
    dataset: Dataset,
    options: DataEvalOptions,
    limits: ImageLimits,
) -> DataReport:
    embedder = Embedder.from_settings(model)
    listings = dataset.split(options.split)
    if not listings:
        raise ValueError(f"{dataset.manifest}: the {options.split} split has no listing")
    vectors = embed_listings(embedder, listings, limits, options.workers, options.progress)
    report = asyncio.run(
        evaluate_listings(embedder.model_id, options.split, listings, vectors, dataset.tasks)
    )
    return replace(report, history=validation_curve(model.model_checkpoint))


def run_eval_data(
    model: ModelSettings,
    compare: ModelSettings | None,
    options: DataEvalOptions,
    fetch: FetchSettings,
    images: ImageSettings,
) -> tuple[Dataset, DataEvaluation]:
    """Load the dataset, evaluate the model (and the compared one) on the split (blocking)."""
    pre = variant(model.model_name).preprocessing()
    dataset = load_dataset(options.data, fetch, images, pre, progress=options.progress)
    limits = ImageLimits.from_settings(images)
    first = evaluate_dataset_model(model, dataset, options, limits)
    second = None if compare is None else evaluate_dataset_model(compare, dataset, options, limits)
    return dataset, DataEvaluation(first, second)


def _delta(a: float, b: float | None) -> str:
    return "" if b is None else f"{a - b:>+9.3f}"


def _cell(v: float | None) -> str:
    return f"{'':>9}" if v is None else f"{v:>9.3f}"


def _row(label: str, mine: float, theirs: float | None, compared: bool, width: int = 28) -> str:
    cells = _cell(mine) + (_cell(theirs) + _delta(mine, theirs) if compared else "")
    return f"  {label:{width}}{cells}"


def format_data_report(ev: DataEvaluation) -> str:
    """The text tables: overall metrics, top-10 agreement per task and recall@10 per top-level
    category, each with the compared model and model - compared when there is one."""
    r, c = ev.report, ev.compare
    compared = c is not None
    head = f"{'':30}{'model':>9}" + (f"{'compare':>9}{'delta':>9}" if compared else "")
    lines = [f"model {r.model_id}  split {r.split}  listings {r.listings}  groups {r.groups}"]
    if c is not None:
        lines.append(f"compare {c.model_id}  (delta: model - compare)")
    for kind in KINDS:
        scores = r.scores(kind)
        other = None if c is None else c.scores(kind)
        lines += ["", f"{KIND_LABELS[kind]} ({scores.queries} queries)", head]
        for k in KS:
            theirs = None if other is None else other.recall[k]
            lines.append(_row(f"recall@{k}", scores.recall[k], theirs, compared))
        theirs = None if other is None else other.mean_average_precision
        lines.append(_row("mAP", scores.mean_average_precision, theirs, compared))
    for kind in KINDS:
        agreement = r.agreement(kind)
        if not agreement:
            continue
        other_agreement = {} if c is None else c.agreement(kind)
        lines += ["", f"top-10 agreement, {KIND_LABELS[kind]} queries", head]
        for task, mine in agreement.items():
            lines.append(_row(task, mine, other_agreement.get(task), compared))
    for kind in KINDS:
        table = r.per_category(kind)
        if not table:
            continue
        other_table = {} if c is None else c.per_category(kind)
        lines += [
            "",
            f"recall@10 per top-level category, {KIND_LABELS[kind]}",
            f"  {'category':20}{'queries':>8}{'model':>9}"
            + (f"{'compare':>9}{'delta':>9}" if compared else ""),
        ]
        for category, (n, mine) in table.items():
            theirs_row = other_table.get(category)
            theirs = None if theirs_row is None else theirs_row[1]
            lines.append(_row(f"{category:20}{n:>8}", mine, theirs, compared, width=28))
    return "\n".join(lines)


def data_json(ev: DataEvaluation) -> dict[str, Any]:
    """The model's report; with --compare also `compare` (the other's) and `delta` (model -
    compare) of every overall metric and per-category recall@10."""
    out = ev.report.as_json()
    if ev.compare is None:
        return out
    other = ev.compare.as_json()
    out["compare"] = other
    delta: dict[str, Any] = {}
    for kind in KINDS:
        key = KIND_KEYS[kind]
        delta[key] = {m: out[key][m] - other[key][m] for m in out[key] if m != "queries"}
    delta["per_category"] = {
        kind: {
            cat: row["recall@10"] - other["per_category"][kind][cat]["recall@10"]
            for cat, row in out["per_category"][kind].items()
            if cat in other["per_category"][kind]
        }
        for kind in KINDS
    }
    out["delta"] = delta
    return out
