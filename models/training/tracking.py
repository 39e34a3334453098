"""Experiment tracking in MLflow: a training run's parameters, per-epoch metrics, exported
checkpoint and later its eval report, in MLFLOW_TRACKING_URI or MLflow's local default store."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import structlog

EXPERIMENT = "lookalike"
# MLflow metric names take letters, digits, _ - . / and spaces; "recall@10" becomes recall_at_10.
_UNSAFE = re.compile(r"[^\w\-./ ]")


def metric_name(name: str) -> str:
    return _UNSAFE.sub("_", name.replace("@", "_at_"))


def flat_metrics(event: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Numbers of a nested event, keyed by their path (`val/buyer_to_listing/recall_at_10`)."""
    out: dict[str, float] = {}
    for key, value in event.items():
        if isinstance(value, Mapping):
            out.update(flat_metrics(value, f"{prefix}{key}/"))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[metric_name(f"{prefix}{key}")] = float(value)
    return out


def _log() -> Any:
    return structlog.get_logger("lookalike.tracking")


class MlflowRun:
    """One MLflow run for one `lookalike train`: started at construction, ended by `end`."""

    def __init__(self, params: Mapping[str, Any], run_name: str | None = None) -> None:
        import mlflow  # the training extra; imported here so serving never needs it

        self._mlflow = mlflow
        if "MLFLOW_EXPERIMENT_NAME" not in os.environ and "MLFLOW_EXPERIMENT_ID" not in os.environ:
            mlflow.set_experiment(EXPERIMENT)
        self.run = mlflow.start_run(run_name=run_name)
        self.run_id: str = self.run.info.run_id
        self.tracking_uri: str = mlflow.get_tracking_uri()
        mlflow.log_params({k: str(v) for k, v in params.items()})
        _log().info("mlflow_run", run_id=self.run_id, tracking_uri=self.tracking_uri)

    def epoch(self, event: Mapping[str, Any]) -> None:
        step = int(event["epoch"])
        metrics = {k: v for k, v in flat_metrics(event).items() if k != "epoch"}
        self._mlflow.log_metrics(metrics, step=step)

    def artifact(self, path: Path, folder: str | None = None) -> None:
        if path.is_dir():
            self._mlflow.log_artifacts(str(path), artifact_path=folder)
        else:
            self._mlflow.log_artifact(str(path), artifact_path=folder)

    def end(self, failed: bool = False) -> None:
        self._mlflow.end_run(status="FAILED" if failed else "FINISHED")


def attach_eval(
    run_id: str, metrics: Mapping[str, Any], report_dir: Path | None, split: str
) -> bool:
    """Add an evaluation (its metrics and report folder) to the training run that exported the
    checkpoint; False when that run is not in the current tracking store."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    try:
        client.get_run(run_id)
    except MlflowException:
        return False
    for name, value in flat_metrics(metrics, f"eval_{split}/").items():
        client.log_metric(run_id, name, value)
    if report_dir is not None:
        client.log_artifacts(run_id, str(report_dir), artifact_path=f"eval_{split}_report")
    return True
