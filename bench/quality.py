"""Search quality: ImageNet features vs a fine-tuned checkpoint on the held-out test items."""

from __future__ import annotations

import argparse
import json
import platform
from collections.abc import Sequence
from pathlib import Path

import torch

from lookalike.evaluation import EvalOptions, run_eval
from models.evaluation.harness import EvalReport
from models.settings import ModelSettings

DEFAULT_OUT = Path(__file__).parent / "results" / "quality.json"
DEFAULT_CHECKPOINT = Path("data/train/model.pt")


def table(reports: Sequence[tuple[str, EvalReport]]) -> str:
    """The README's markdown table: recall@10 of both tasks, plus recall@1 and mAP."""
    lines = [
        "| model | model id | buyer photo -> listing recall@10 | recall@1 | mAP "
        "| listing -> listing recall@10 | mAP |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, r in reports:
        b, li = r.buyer_to_listing, r.listing_to_listing
        lines.append(
            f"| {label} | `{r.model_id}` | {b.recall[10]:.3f} | {b.recall[1]:.3f} "
            f"| {b.mean_average_precision:.3f} | {li.recall[10]:.3f} "
            f"| {li.mean_average_precision:.3f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--items", type=int, default=360)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if not args.checkpoint.exists():
        parser.error(f"{args.checkpoint} does not exist: run `lookalike train` first")
    options = EvalOptions(items=args.items, seed=args.seed, split="test")
    base = ModelSettings(device="cpu")
    reports = [
        ("ImageNet features", run_eval(base, options)),
        (
            "fine-tuned",
            run_eval(base.model_copy(update={"model_checkpoint": args.checkpoint}), options),
        ),
    ]
    imagenet, tuned = reports[0][1], reports[1][1]
    print(table(reports))
    gain = tuned.buyer_to_listing.recall[10] - imagenet.buyer_to_listing.recall[10]
    print(
        f"\nbuyer photo -> listing recall@10: {gain * 100:+.1f} points; test split: "
        f"{tuned.items} items, {tuned.listings} listings, {tuned.buyer_to_listing.queries} "
        f"buyer photos"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "machine": {"platform": platform.platform(), "torch": torch.__version__},
        "reports": {label: r.as_json() for label, r in reports},
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
