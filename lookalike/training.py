"""`lookalike train`: fine-tune on a dataset manifest or the built-in catalog; export the best."""

from __future__ import annotations

from typing import Any

import structlog

from models.dataset.dataset import DatasetOptions, load_dataset
from models.evalset.catalog import build_eval_catalog
from models.images import ImageLimits
from models.network import variant
from models.settings import FetchSettings, ImageSettings
from models.training.source import CatalogSource, DatasetSource, TrainingSource
from models.training.trainer import LOG_FILE, TrainConfig, Trainer, TrainResult


def _log() -> Any:
    return structlog.get_logger("lookalike.train")


def training_source(
    config: TrainConfig,
    data: DatasetOptions | None,
    fetch: FetchSettings,
    images: ImageSettings,
    progress: bool,
) -> TrainingSource:
    """The manifest's dataset (checked, split, photos made local), or the built-in catalog."""
    if data is None:
        return CatalogSource(
            build_eval_catalog(config.catalog_items, config.catalog_seed), progress
        )
    pre = variant(config.model_name).preprocessing()
    dataset = load_dataset(data, fetch, images, pre, progress=progress)
    return DatasetSource(dataset, ImageLimits.from_settings(images))


def run_training(
    config: TrainConfig,
    resume: bool = False,
    progress: bool = True,
    data: DatasetOptions | None = None,
    fetch: FetchSettings | None = None,
    images: ImageSettings | None = None,
    track: bool = False,
) -> TrainResult:
    """Train (blocking), resuming from config.out_dir's state when asked; returns the export.
    With `track`, the run is recorded in MLflow (parameters, per-epoch metrics, checkpoint)."""
    source = training_source(
        config, data, fetch or FetchSettings(), images or ImageSettings(), progress
    )
    try:
        from models.training.tracking import MlflowRun

        if track:
            import mlflow  # noqa: F401 - the training extra; without it the run is not tracked
    except ImportError:
        _log().warning("mlflow_missing", hint="pip install 'lookalike[train]' to track runs")
        track = False
    if not track:
        return Trainer(config, source, progress=progress).run(resume=resume)

    params = {**config.model_dump(mode="json"), **source.metadata(), "resume": resume}
    run = MlflowRun(params, run_name=config.out_dir.name)
    metadata = {"mlflow_run_id": run.run_id, "mlflow_tracking_uri": run.tracking_uri}
    trainer = Trainer(config, source, progress=progress, on_epoch=run.epoch, metadata=metadata)
    try:
        result = trainer.run(resume=resume)
        run.artifact(result.checkpoint, "model")
        run.artifact(config.out_dir / LOG_FILE)
    except BaseException:
        run.end(failed=True)
        raise
    run.end()
    return result
