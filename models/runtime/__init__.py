"""Inference runtimes behind one protocol: torch (training, fallback, CUDA) and OpenVINO (CPU)."""

from models.runtime.base import Backend, Plan, Precision, Runtime
from models.runtime.factory import open_backend
from models.runtime.select import choose, cpu_has_bf16

__all__ = ["Backend", "Plan", "Precision", "Runtime", "choose", "cpu_has_bf16", "open_backend"]
