"""Builds the planned backend, and serves torch instead whenever OpenVINO cannot run."""

from __future__ import annotations

from pathlib import Path

import structlog
import torch

from models.network import EmbeddingNet
from models.runtime.base import Backend, Plan
from models.runtime.torch_backend import DTYPES, TorchBackend

log = structlog.get_logger("models.runtime")


def open_backend(
    model: EmbeddingNet, device: torch.device, plan: Plan, cache_dir: Path, torchscript: bool
) -> Backend:
    """The backend `plan` asks for; when OpenVINO is missing, refuses the device or fails to
    export or compile, one `runtime_fallback` line is logged and torch serves instead."""
    if plan.runtime == "openvino":
        try:
            if device.type != "cpu":
                raise RuntimeError(f"OpenVINO runs on the CPU here, not {device.type}")
            # Imported here: a missing or broken openvino must cost the fallback, not the import.
            from models.runtime.openvino_backend import OpenVinoBackend

            return OpenVinoBackend.open(model, plan, cache_dir)
        except Exception as exc:  # any failure of an optional runtime leaves torch to serve
            log.warning(
                "runtime_fallback",
                wanted="openvino",
                serving="torch",
                precision=plan.precision,
                model_id=model.model_id,
                error=f"{type(exc).__name__}: {exc}",
            )
        # The fallback runs torch's own default precision for the device (fp32 on the CPU).
        return TorchBackend(model, device, torchscript=torchscript)
    return TorchBackend(model, device, dtype=DTYPES[plan.precision], torchscript=torchscript)
