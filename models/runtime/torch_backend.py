"""The torch backend: the eager network, or its frozen TorchScript trace, on a CPU or a GPU."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable

import numpy as np
import torch
from torch.jit._trace import TracerWarning

from models.network import EmbeddingNet
from models.runtime.base import Precision, Runtime

log = logging.getLogger(__name__)

# Measured on 2 CPU cores (bench.embed and interleaved runs): channels_last was as fast as the
# contiguous layout at batch 1-4 (~60 images/s) and faster from batch 8 up (batch 32: 42 vs 24),
# so the CPU uses it too.
CPU_CHANNELS_LAST = True
DTYPES: dict[Precision, torch.dtype] = {
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}


def default_precision(device: torch.device) -> tuple[torch.dtype, bool]:
    """(dtype, channels_last) of the torch path on `device` when nothing else is asked."""
    if device.type == "cuda":
        return torch.float16, True
    return torch.float32, CPU_CHANNELS_LAST


def precision_name(dtype: torch.dtype) -> Precision:
    return next(name for name, d in DTYPES.items() if d == dtype)


def freeze(model: EmbeddingNet, example: torch.Tensor) -> torch.jit.ScriptModule:
    """A frozen TorchScript trace of `model` at `example`'s size (any batch size works)."""
    with warnings.catch_warnings(), torch.inference_mode():
        # SameConv2d's padding is computed from the input size: the trace records it for the
        # one size Preprocessing produces, which is what the warning is about.
        warnings.simplefilter("ignore", TracerWarning)
        # torch 2.13 marks TorchScript deprecated but ships it. Chosen over torch.compile,
        # which needs a C++ toolchain and about a minute of compiling at every start here.
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(model, example, check_trace=False)  # type: ignore[no-untyped-call]
        frozen: torch.jit.ScriptModule = torch.jit.freeze(traced)
    return frozen


class TorchBackend:
    """The model on one torch device, in one dtype and memory format; moves `model` in place.

    With `torchscript`, passes run a frozen TorchScript trace of the model: BatchNorm folded into
    the convolutions and no Python between operators. On the 2-core CPU one image took 8.3–8.7 ms
    frozen against 12–18 ms eager, same outputs within 1e-6. The trace fixes the input size,
    which Preprocessing fixes anyway.
    """

    runtime: Runtime = "torch"

    def __init__(
        self,
        model: EmbeddingNet,
        device: torch.device,
        dtype: torch.dtype | None = None,
        channels_last: bool | None = None,
        torchscript: bool = False,
    ) -> None:
        default_dtype, default_channels_last = default_precision(device)
        self.device = device
        self.dtype = default_dtype if dtype is None else dtype
        self.channels_last = default_channels_last if channels_last is None else channels_last
        self.memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        model = model.eval().to(device=device, dtype=self.dtype)
        if self.channels_last:
            # Module.to accepts memory_format at runtime; torch's overload stubs leave it out.
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.model = model
        self.torchscript = torchscript
        self._forward: Callable[[torch.Tensor], torch.Tensor] = (
            self._frozen(model) if torchscript else model
        )

    @property
    def precision(self) -> Precision:
        return precision_name(self.dtype)

    def _frozen(self, model: EmbeddingNet) -> Callable[[torch.Tensor], torch.Tensor]:
        size = model.preprocessing.size
        example = torch.zeros((1, 3, size, size), device=self.device, dtype=self.dtype)
        try:
            return freeze(model, example.contiguous(memory_format=self.memory_format))
        except (AttributeError, RuntimeError) as exc:
            # A torch without TorchScript still embeds, only slower.
            log.warning("TorchScript unavailable (%s): running the eager model", exc)
            self.torchscript = False
            return model

    def infer(self, batch: torch.Tensor) -> np.ndarray:
        if batch.device.type == "cpu" and self.device.type == "cuda":
            batch = batch.pin_memory()
        with torch.inference_mode():
            x = batch.to(
                self.device, dtype=self.dtype, memory_format=self.memory_format, non_blocking=True
            )
            z = self._forward(x)
            result: np.ndarray = z.to("cpu", dtype=torch.float32).numpy()
        return result
