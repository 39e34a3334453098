"""`lookalike train`: fine-tune on the evaluation catalog's training split, export a checkpoint."""

from __future__ import annotations

from models.evalset.catalog import build_eval_catalog
from models.training.trainer import TrainConfig, Trainer, TrainResult


def run_training(config: TrainConfig, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train (blocking), resuming from config.out_dir's state when asked; returns the export."""
    catalog = build_eval_catalog(config.catalog_items, config.catalog_seed)
    return Trainer(config, catalog, progress=progress).run(resume=resume)
