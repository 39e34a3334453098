"""The protocol every inference backend implements, and the plan it is built from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import torch

Runtime = Literal["torch", "openvino"]
Precision = Literal["fp32", "bf16", "fp16"]


@dataclass(frozen=True)
class Plan:
    """What to run: the runtime, its precision, and how many passes at once on how many threads."""

    runtime: Runtime
    precision: Precision
    # Forward passes that may run at once (OpenVINO: streams and infer requests).
    streams: int = 1
    # CPU threads of each pass; None leaves the runtime's default.
    threads: int | None = None


class Backend(Protocol):
    """Runs the embedding network on one preprocessed batch; safe to call from `streams` threads
    at once (torch: each caller's own thread; OpenVINO: one infer request per caller)."""

    @property
    def runtime(self) -> Runtime: ...

    @property
    def precision(self) -> Precision: ...

    def infer(self, batch: torch.Tensor) -> np.ndarray:
        """(N, dim) float32 L2-normalised embeddings of an (N, 3, size, size) float32 batch."""
        ...
