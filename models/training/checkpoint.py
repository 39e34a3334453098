"""What an exported checkpoint says about its training run, read without building the model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from models.network import CHECKPOINT_FORMAT, CheckpointError

Metadata = dict[str, str | int | float | bool]


def checkpoint_metadata(checkpoint: Path) -> Metadata:
    """The metadata an export carries (training run, data, metrics); CheckpointError otherwise."""
    try:
        payload = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises pickle/zip/runtime errors for foreign files
        raise CheckpointError(f"{checkpoint}: not a torch checkpoint ({e})") from e
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{checkpoint}: not a {CHECKPOINT_FORMAT} export")
    return dict(payload.get("metadata") or {})


def validation_curve(checkpoint: Path | None) -> list[dict[str, Any]]:
    """Validation recall per epoch as `lookalike train` stored it (empty for other models)."""
    if checkpoint is None:
        return []
    curve = checkpoint_metadata(checkpoint).get("val_curve")
    return list(json.loads(curve)) if isinstance(curve, str) else []
